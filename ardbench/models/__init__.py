"""Architectures (registered by name) and model specs; see ``loading`` for the spec syntax.

Built-in architectures, all for [0,1] NCHW 32x32 inputs with no normalisation inside, each with
``forward_features(x) -> (logits, feats)``: ``resnet18``, ``preact_resnet18``,
``preact_resnet18_final_bn``, ``mobilenetv2``, ``wrn_16_2``, ``wrn_28_10``, ``wrn_34_10``
(strict-loadable TRADES checkpoint) and ``small_cnn`` (the CPU demo network).
"""

from __future__ import annotations

from . import mobilenetv2, preact_resnet, resnet, small_cnn, wideresnet  # noqa: F401  (register)
from .features import FeatureError, count_parameters, feature_dim, logits_and_features
from .loading import (
    ARCHS,
    SPEC_ALIASES,
    LoadedModel,
    ModelFileError,
    StateDictMismatchError,
    UnsafeModelError,
    build_arch,
    default_model_dir,
    extract_state_dict,
    file_sha256,
    load_model,
    load_state_dict_strict,
    register_arch,
    register_spec_alias,
    state_dict_sha256,
)

__all__ = [
    "SPEC_ALIASES",
    "register_spec_alias",
    "ARCHS",
    "FeatureError",
    "LoadedModel",
    "ModelFileError",
    "StateDictMismatchError",
    "UnsafeModelError",
    "build_arch",
    "count_parameters",
    "default_model_dir",
    "extract_state_dict",
    "feature_dim",
    "file_sha256",
    "load_model",
    "load_state_dict_strict",
    "logits_and_features",
    "register_arch",
    "state_dict_sha256",
]
