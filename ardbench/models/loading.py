"""The architecture registry and model specs (teachers, students, evaluated models).

A model spec is accepted everywhere a model is named:

==========================  ==================================================================
``ARCH``                    a fresh, randomly initialised registered architecture
``ARCH:PATH.safetensors``   a state dict in a safetensors file (no pickle: the recommended
                            format for sharing weights); loaded strictly
``ARCH:PATH``               a state dict (``torch.load(..., weights_only=True)``), raw or nested
                            under ``state_dict`` / ``model`` / ``model_state_dict``; a
                            ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix
                            is stripped; loaded strictly
``PATH.pt2``                a ``torch.export`` archive (any architecture, its own normalisation),
                            checked before torch reads it (:mod:`ardbench.models.archive`)
                            unless trusted (:mod:`ardbench.models.trust`); its batch dimension
                            must be dynamic
``run:RUN_ID``              a model ardbench trained: ``RUNS_DIR/RUN_ID/model.pt`` + ``model.json``
                            (``{"arch": ..., "num_classes": ...}``); RUN_ID may be a directory
``robustbench:MODEL_ID``    the RobustBench zoo (Linf), from ``MODEL_DIR/<dataset>/Linf/ID.pt``;
                            fetched only with ``download=True``
==========================  ==================================================================

Every loaded model is returned in eval mode on the requested device with the sha256 of its
weights (of the file when there is one, else of the state dict; see ``state_dict_sha256``).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import io
import os
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ardbench.errors import ArdbenchError, ConfigError, first_line
from ardbench.io import UnreadableFileError, file_sha256, read_json_bounded
from ardbench.models.export_device import move_program
from ardbench.registry import Registry, UnknownNameError

from .archive import ModelFileError, UnsafeModelError, checked_archive, quiet_torch_export
from .trust import is_trusted
from .weights import (
    SAFETENSORS_SUFFIX,
    StateDictMismatchError,
    extract_state_dict,
    load_state_dict_strict,
    read_weights,
    torch_load_error,
)

__all__ = [
    "ARCHS",
    "LoadedModel",
    "ModelFileError",
    "StateDictMismatchError",
    "UnsafeModelError",
    "build_arch",
    "default_model_dir",
    "extract_state_dict",
    "file_sha256",
    "load_model",
    "load_state_dict_strict",
    "register_arch",
    "state_dict_sha256",
]

ArchFactory = Callable[..., nn.Module]

ARCHS: Registry[ArchFactory] = Registry("architecture")

_BUILTIN_ARCH_MODULES = ("resnet", "preact_resnet", "mobilenetv2", "wideresnet", "small_cnn")


def _import_builtins() -> None:
    for name in _BUILTIN_ARCH_MODULES:
        importlib.import_module(f"ardbench.models.{name}")


ARCHS.add_loader(_import_builtins)


def register_arch(name: str) -> Callable[[ArchFactory], ArchFactory]:
    """Decorator: make ``fn(num_classes: int = 10) -> nn.Module`` available as an architecture."""
    return ARCHS.register(name)


# the classes a model may have: a head of 10^12 would ask for terabytes before anything fails
MAX_CLASSES = 100_000


def build_arch(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """A fresh model of a registered architecture (unknown names fail with a suggestion)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise ConfigError(f"num_classes must be a whole number, got {num_classes!r:.40}")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
    return ARCHS.get(name)(num_classes=num_classes, **kwargs)


@dataclass
class LoadedModel:
    module: nn.Module
    spec: str
    arch: str  # registry name, "export" for .pt2 archives, the class name for RobustBench
    sha256: str
    source: str  # "fresh" | "state_dict" | "export" | "run" | "robustbench"
    path: str | None = None  # the weights file, when there is one


# ----------------------------------------------------------------------------------- hashing


def state_dict_sha256(module: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over the state dict in key order: each key, dtype, shape and raw tensor bytes."""
    sd = module.state_dict() if isinstance(module, nn.Module) else module
    h = hashlib.sha256()
    for key, value in sd.items():
        h.update(key.encode())
        if not isinstance(value, torch.Tensor):
            h.update(repr(value).encode())
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _files_sha256(paths: list[Path]) -> str:
    if len(paths) == 1:
        return file_sha256(paths[0])
    h = hashlib.sha256()
    for p in paths:
        h.update(bytes.fromhex(file_sha256(p)))
    return h.hexdigest()


# ------------------------------------------------------------------------------ state dicts


def _require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():  # a FIFO would hang the reader, a device never end
        raise ModelFileError(f"{what}: {path} is not a regular file")
    return path


# ------------------------------------------------------------------------------------ specs


def default_model_dir() -> Path:
    """``$ARDBENCH_MODEL_DIR``, else ``robustbench/`` in the cache (``$ARDBENCH_CACHE``, else
    ``~/.cache/ardbench``)."""
    from ..paths import cache_dir

    env = os.environ.get("ARDBENCH_MODEL_DIR")
    return Path(env).expanduser() if env else cache_dir() / "robustbench"


# Named specs resolved by a function that returns a concrete spec (e.g. "demo": the cached
# demo teacher, trained on first use; registered by ardbench.train.demo, which sits above
# this module, so the loader never imports the trainer).
SPEC_ALIASES: dict[str, Callable[[], str]] = {}
_WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar", ".bin", SAFETENSORS_SUFFIX)


# Aliases whose module registers them on import, for a caller that never imported it
# (``ardbench eval demo`` imports no trainer): fixed names to fixed ardbench modules.
LAZY_ALIASES = {"demo": "ardbench.train.demo", "demo_natural": "ardbench.train.demo"}


def register_spec_alias(name: str, resolve: Callable[[], str]) -> None:
    SPEC_ALIASES[name] = resolve


def resolve_alias(spec: str) -> str:
    """``spec`` itself, or the concrete spec a named alias (``demo``) stands for."""
    if spec in LAZY_ALIASES and spec not in SPEC_ALIASES:
        importlib.import_module(LAZY_ALIASES[spec])
    return SPEC_ALIASES[spec]() if spec in SPEC_ALIASES else spec


def load_model(
    spec: str,
    *,
    num_classes: int = 10,
    dataset: str = "cifar10",
    runs_dir: str | Path = "runs",
    model_dir: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Resolve a model spec (see the module docstring); the module is in eval mode on ``device``."""
    spec = resolve_alias(spec.strip())
    head, sep, tail = spec.partition(":")
    is_drive = len(head) == 1 and head.isalpha() and tail[:1] in ("\\", "/")  # C:\...
    if sep and not is_drive:
        if head == "run":
            loaded = _load_run(tail, runs_dir)
        elif head == "robustbench":
            loaded = _load_robustbench(tail, dataset, model_dir, download)
        elif head in ARCHS:
            if tail.endswith(".pt2"):
                raise ConfigError(
                    f"{spec!r}: a .pt2 archive carries its own architecture",
                    hint=f"pass the path alone: {tail}",
                )
            loaded = _load_arch_file(head, Path(tail).expanduser(), num_classes)
        elif spec.endswith(".pt2"):
            loaded = _load_export(Path(spec).expanduser(), device)
        else:
            ARCHS.get(head)  # raises the "did you mean" error
            raise AssertionError("unreachable")
    elif spec.endswith(".pt2"):
        loaded = _load_export(Path(spec).expanduser(), device)
    elif spec in ARCHS:
        module = build_arch(spec, num_classes=num_classes)
        loaded = LoadedModel(module, spec, spec, state_dict_sha256(module), "fresh")
    elif Path(spec).suffix in _WEIGHT_SUFFIXES or Path(spec).is_file():
        raise ConfigError(
            f"{spec!r} looks like a weights file; a state dict needs its architecture",
            hint=f"ARCH:PATH with ARCH one of {', '.join(ARCHS.names())}",
        )
    else:
        ARCHS.get(spec)  # raises the "did you mean" error
        raise AssertionError("unreachable")
    loaded.spec = spec
    if loaded.source != "export":
        loaded.module.to(device)
    loaded.module.eval()
    return loaded


def _load_arch_file(arch: str, path: Path, num_classes: int) -> LoadedModel:
    _require_file(path, f"weights file for {arch}")
    module = build_arch(arch, num_classes=num_classes)
    sd = extract_state_dict(read_weights(path), where=str(path))
    load_state_dict_strict(module, sd, where=str(path))
    return LoadedModel(module, "", arch, file_sha256(path), "state_dict", str(path))


def run_meta(path: Path) -> tuple[str, int]:
    """(arch, num_classes) of a run's ``model.json`` (a regular file of a few bytes)."""
    try:
        meta = read_json_bounded(path, limit=1 << 20)
    except UnreadableFileError as exc:
        raise ModelFileError(f"{path} is not readable JSON ({exc.reason})") from None
    arch = meta.get("arch") if isinstance(meta, dict) else None
    classes = meta.get("num_classes", 10) if isinstance(meta, dict) else None
    if not isinstance(arch, str) or not isinstance(classes, int) or isinstance(classes, bool):
        raise ModelFileError(
            f'{path} must hold {{"arch": NAME, "num_classes": N}}, got {str(meta)[:80]}'
        )
    if not 1 <= classes <= MAX_CLASSES:
        raise ModelFileError(f"{path}: num_classes must be in [1, {MAX_CLASSES}], got {classes}")
    return arch, classes


def _load_run(run_id: str, runs_dir: str | Path) -> LoadedModel:
    if not run_id.strip():
        raise ConfigError("run: needs a run id or directory", hint="e.g. run:RUN_ID")
    candidates = [Path(runs_dir).expanduser() / run_id, Path(run_id).expanduser()]
    run_dir = next((p for p in candidates if p.is_dir()), None)
    if run_dir is None:
        raise FileNotFoundError(
            f"run {run_id!r} not found: neither {candidates[0]} nor {candidates[1]} is a run "
            "directory (pass --runs DIR if the runs live elsewhere)"
        )
    meta_path = _require_file(run_dir / "model.json", f"model description of run {run_id!r}")
    weights = _require_file(run_dir / "model.pt", f"final weights of run {run_id!r}")
    arch, num_classes = run_meta(meta_path)
    module = build_arch(arch, num_classes=num_classes)
    sd = extract_state_dict(read_weights(weights), where=str(weights))
    load_state_dict_strict(module, sd, where=str(weights))
    return LoadedModel(module, "", arch, file_sha256(weights), "run", str(weights))


def _load_export(path: Path, device: str | torch.device) -> LoadedModel:
    """Read the archive once, check those bytes (unless trusted), hand torch the checked copy."""
    blob = _require_file(path, "torch.export archive").read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    if not is_trusted(sha):
        blob = checked_archive(str(path), blob)
    with quiet_torch_export():
        try:
            program = torch.export.load(io.BytesIO(blob))
        except Exception as exc:
            raise ModelFileError(
                f"{path} is not a loadable torch.export archive ({first_line(exc)})",
                hint="write it with torch.export.save, with the torch version that loads it",
            ) from None
        _check_batch_dim(program, path)
        if torch.device(device).type != "cpu":
            # Moves constants baked into the graph too, which Module.to() would miss; works on
            # torches without torch.export.passes (export_device.move_program_fallback).
            program = move_program(program, device)
        try:
            module = program.module()
        except Exception as exc:
            raise ModelFileError(
                f"{path}: the exported graph does not build ({first_line(exc)})"
            ) from None
    _make_frozen_mode(module)
    return LoadedModel(module, "", "export", sha, "export", str(path))


def _check_batch_dim(program: Any, path: Path) -> None:
    """One image-batch input whose first dimension is dynamic (attacks run any batch size)."""
    names = list(program.graph_signature.user_inputs)
    if len(names) != 1:
        raise ModelFileError(
            f"{path}: the exported model takes {len(names)} inputs; ardbench passes one batch "
            "of images (N, C, H, W)"
        )
    node = next((n for n in program.graph.nodes if n.name == names[0]), None)
    val = node.meta.get("val") if node is not None else None
    shape = getattr(val, "shape", None)
    if shape is not None and len(shape) and isinstance(shape[0], int):
        raise ModelFileError(
            f"{path} was exported with a fixed batch of {shape[0]}, so it cannot run the "
            "evaluation's batches",
            hint="export with a dynamic batch: torch.export.export(model, (x,), "
            "dynamic_shapes=({0: torch.export.Dim('batch')},)) with x of batch 2 or more",
        )


class FrozenModelError(ArdbenchError, NotImplementedError):
    """An exported (frozen) network asked to train."""


def _make_frozen_mode(module: nn.Module) -> None:
    """Let ``.eval()`` work on an exported module (torch refuses both train() and eval()).

    An exported graph computes whatever it was exported with; these archives are inference
    graphs, so eval() only sets the flags (for code that checks ``.training``) and train()
    stays an error.
    """

    def train(self: nn.Module, mode: bool = True) -> nn.Module:
        if mode:
            raise FrozenModelError(
                "a torch.export archive has its train/eval behaviour fixed at export time; "
                "it can only be used as a frozen network (a teacher, or a model to evaluate)",
                hint="train a registered architecture (ardbench list models) as the student",
            )
        for m in self.modules():
            m.training = False
        return self

    def eval_(self: nn.Module) -> nn.Module:
        return self.train(False)

    module.train = types.MethodType(train, module)  # type: ignore[method-assign]
    module.eval = types.MethodType(eval_, module)  # type: ignore[method-assign]


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """RobustBench calls torch.load without weights_only: make sure it means True (torch's
    default, unless TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set)."""
    saved = {k: os.environ.pop(k, None) for k in _TORCH_LOAD_ENV}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


_TORCH_LOAD_ENV = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")


def _load_robustbench(
    model_id: str, dataset: str, model_dir: str | Path | None, download: bool
) -> LoadedModel:
    from ardbench._compat import import_robustbench

    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model as rb_load_model

    try:
        ds = BenchmarkDataset(dataset)
    except ValueError:
        known = ", ".join(d.value for d in BenchmarkDataset)
        raise ConfigError(
            f"RobustBench has no dataset {dataset!r}", hint=f"known: {known}"
        ) from None
    zoo = model_dicts[ds][ThreatModel.Linf]
    if model_id not in zoo:
        close = difflib.get_close_matches(model_id, list(zoo), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown RobustBench {ds.value} Linf model {model_id!r}.{hint}")
    root = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    base = root / ds.value / ThreatModel.Linf.value / f"{model_id}.pt"
    gdrive = zoo[model_id].get("gdrive_id")
    if isinstance(gdrive, list):  # ensembles: robustbench names the members ID.pt_m{i}.pt
        files = [Path(f"{base}_m{i}.pt") for i in range(len(gdrive))]
    else:
        files = [base]
    missing = [p for p in files if not p.is_file()]
    if gdrive is None and not download:
        raise FileNotFoundError(
            f"RobustBench model {model_id!r} is served through timm / the Hugging Face hub, not "
            "a local file; pass --download to fetch it"
        )
    if missing and not download:
        raise FileNotFoundError(
            f"RobustBench checkpoint not found: {', '.join(str(p) for p in missing)}; "
            "pass --download to fetch it, or place the file there"
        )
    try:
        with _weights_only_loads():
            module = rb_load_model(
                model_name=model_id, model_dir=str(root), dataset=ds.value, threat_model="Linf"
            )
    except (ArdbenchError, OSError):
        raise
    except Exception as exc:  # a corrupt or code-carrying checkpoint in the model directory
        raise ModelFileError(
            f"RobustBench model {model_id!r} does not load from {root} ({torch_load_error(exc)})",
            hint="delete its checkpoint there and pass --download to fetch it again",
        ) from None
    present = [p for p in files if p.is_file()]
    sha = _files_sha256(present) if present else state_dict_sha256(module)
    return LoadedModel(
        module, "", type(module).__name__, sha, "robustbench", str(present[0]) if present else None
    )
