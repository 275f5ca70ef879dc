"""Penultimate features and parameter counts for any model ardbench can load.

``logits_and_features(model, x)`` runs ONE forward and returns ``(logits, feats)``, where
``feats`` is the flattened input of the final linear layer:

1. a model with ``forward_features(x) -> (logits, feats)`` (every built-in architecture) is
   called through it;
2. otherwise a forward pre-hook on the last ``nn.Linear`` (in module registration order)
   captures its input -- RobustBench models and most third-party nets;
3. a ``torch.export`` archive (``.pt2``) has no ``nn.Linear`` submodules (its graph calls
   ``aten.linear`` directly), so its graph is copied with the input of the last linear op added as
   a second output; the copy shares the archive's parameters and buffers and is cached per model
   (rebuilt if those tensors are replaced, e.g. by ``.to(device)``).

Anything else raises ``FeatureError`` saying why.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FeatureError", "count_parameters", "feature_dim", "logits_and_features"]


class FeatureError(RuntimeError):
    """The model offers no way to get penultimate features in the same forward as its logits."""


# Graph ops whose input is the penultimate feature, with the index of that input.
_LINEAR_OPS: dict[Any, int] = {
    torch.ops.aten.linear.default: 0,
    torch.ops.aten.addmm.default: 1,  # addmm(bias, input, weight.t())
    torch.nn.functional.linear: 0,
}

_graph_cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], torch.fx.GraphModule]]
_graph_cache = weakref.WeakKeyDictionary()


def logits_and_features(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Logits and penultimate features (N, D) from one forward pass; gradients flow through both."""
    forward_features = getattr(model, "forward_features", None)
    if callable(forward_features):
        return forward_features(x)
    linear = _last_linear(model)
    if linear is not None:
        return _via_hook(model, linear, x)
    if isinstance(model, torch.fx.GraphModule):
        return _via_graph(model, x)
    raise FeatureError(
        f"cannot get penultimate features from {type(model).__name__}: it has no "
        "forward_features(x) -> (logits, feats) method, no nn.Linear submodule and is not a "
        "torch.fx/torch.export graph; add a forward_features method"
    )


def feature_dim(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Width of the penultimate features, from one no-grad forward in eval mode (mode restored)."""
    x = torch.zeros(input_shape, device=_device_of(model))
    with torch.no_grad(), _eval_flags(model):
        _, feats = logits_and_features(model, x)
    return int(feats.shape[1])


def count_parameters(
    model: nn.Module,
    *,
    used_in_forward: bool = False,
    input_shape: tuple[int, ...] = (1, 3, 32, 32),
) -> int:
    """Number of parameter elements (shared tensors counted once).

    With ``used_in_forward=True`` only parameters that a forward pass on zeros of ``input_shape``
    touches are counted (e.g. WRN-34-10 without its unused ``sub_block1``): parameters owned by
    modules that forward calls, or, for a graph module, those its graph reads.
    """
    if not used_in_forward:
        return _numel_unique(model.parameters())
    hit: set[int] = set()
    if isinstance(model, torch.fx.GraphModule):
        params = dict(model.named_parameters())
        hit = {
            id(params[node.target])
            for node in model.graph.nodes
            if node.op == "get_attr" and node.target in params
        }
    used_modules: list[nn.Module] = []
    handles = [m.register_forward_hook(_record_call(used_modules)) for m in model.modules()]
    try:
        with torch.no_grad(), _eval_flags(model):
            model(torch.zeros(input_shape, device=_device_of(model)))
    finally:
        for h in handles:
            h.remove()
    params_used: list[torch.Tensor] = [p for p in model.parameters() if id(p) in hit]
    for m in used_modules:
        params_used.extend(m.parameters(recurse=False))
    return _numel_unique(params_used)


def _record_call(sink: list[nn.Module]):
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        sink.append(module)

    return hook


def _numel_unique(params: Iterator[Tensor] | list[Tensor]) -> int:
    seen: dict[int, int] = {}
    for p in params:
        seen[id(p)] = p.numel()
    return sum(seen.values())


def _last_linear(model: nn.Module) -> nn.Linear | None:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


def _via_hook(model: nn.Module, linear: nn.Linear, x: Tensor) -> tuple[Tensor, Tensor]:
    captured: list[Tensor] = []

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0])

    handle = linear.register_forward_pre_hook(pre_hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not captured:
        raise FeatureError(
            f"the last nn.Linear of {type(model).__name__} was not called in forward, so it is "
            "not the classifier; add a forward_features(x) -> (logits, feats) method"
        )
    # The last call is the one that produced the logits if the layer is reused.
    return logits, captured[-1].flatten(1)


def _via_graph(gm: torch.fx.GraphModule, x: Tensor) -> tuple[Tensor, Tensor]:
    fingerprint = _attr_fingerprint(gm)
    cached = _graph_cache.get(gm)
    if cached is None or cached[0] != fingerprint:
        cached = (fingerprint, _features_graph(gm))
        _graph_cache[gm] = cached
    logits, feats = cached[1](x)
    return logits, feats.flatten(1)


def _attr_fingerprint(gm: torch.fx.GraphModule) -> tuple[int, ...]:
    ids = []
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            obj: Any = gm
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
            ids.append(id(obj))
    return tuple(ids)


def _features_graph(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of ``gm``'s graph returning (logits, input of the last linear op).

    The copy uses the plain calling convention (tensor in, tuple out) instead of the export
    pytree specs, which would not describe the extra output.
    """
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    out = graph.graph_copy(gm.graph, env)
    linears = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in _LINEAR_OPS]
    if not linears:
        raise FeatureError(
            f"cannot get penultimate features from this {type(gm).__name__}: its graph has no "
            "linear/addmm op; export a model whose forward returns (logits, feats) instead"
        )
    last = linears[-1]
    feats = last.args[_LINEAR_OPS[last.target]]
    if isinstance(out, (tuple, list)):
        if len(out) != 1:
            raise FeatureError(
                f"the graph returns {len(out)} outputs; expected the logits tensor alone"
            )
        out = out[0]
    graph.output((out, env[feats]))
    return torch.fx.GraphModule(gm, graph, class_name="FeaturesGraphModule")


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@contextlib.contextmanager
def _eval_flags(model: nn.Module) -> Iterator[None]:
    """Eval mode by flags, restored afterwards (exported modules refuse ``.train()``/``.eval()``)."""
    saved = [(m, m.training) for m in model.modules()]
    for m, _ in saved:
        m.training = False
    try:
        yield
    finally:
        for m, mode in saved:
            m.training = mode
