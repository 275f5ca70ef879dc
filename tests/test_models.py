"""Architectures, penultimate features and model specs (CPU, a few seconds)."""

from __future__ import annotations

import functools
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ardbench.models import (
    ARCHS,
    LoadedModel,
    build_arch,
    count_parameters,
    feature_dim,
    file_sha256,
    load_model,
    logits_and_features,
    state_dict_sha256,
)
from ardbench.models.features import FeatureError
from ardbench.models.loading import StateDictMismatchError
from ardbench.models.wideresnet import WideResNet
from ardbench.registry import UnknownNameError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESNET4B = SHARED_DATA / "models" / "resnet4b_cifar10_linf2.pt2"
CIFAR10_TEST = SHARED_DATA / "cifar10" / "cifar10_exact_test.npz"

# name -> (parameters for 10 classes, penultimate width); reference §5 gives the rounded figures.
ARCH_FACTS = {
    "resnet18": (11_173_962, 512),
    "preact_resnet18": (11_171_146, 512),
    "preact_resnet18_final_bn": (11_172_170, 512),
    "mobilenetv2": (2_296_922, 1280),
    "wrn_16_2": (691_674, 128),
    "wrn_28_10": (36_479_194, 640),
    "wrn_34_10": (48_262_586, 640),
    "small_cnn": (94_762, 128),
}
CHEAP = [
    "resnet18",
    "preact_resnet18",
    "preact_resnet18_final_bn",
    "mobilenetv2",
    "wrn_16_2",
    "small_cnn",
]


@functools.cache
def _built(name: str, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return build_arch(name, num_classes=num_classes).eval()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


# ------------------------------------------------------------------------------ architectures


def test_registered_names() -> None:
    assert set(ARCH_FACTS) <= set(ARCHS.names())


@pytest.mark.parametrize("name", [n for n in ARCH_FACTS if n != "wrn_34_10"])
def test_parameter_counts(name: str) -> None:
    assert count_parameters(_built(name)) == ARCH_FACTS[name][0]


def test_reference_rounded_counts() -> None:
    millions = {
        "resnet18": 11.17,
        "preact_resnet18": 11.17,
        "mobilenetv2": 2.30,
        "wrn_16_2": 0.69,
        "wrn_28_10": 36.48,
        "wrn_34_10": 48.26,
    }
    for name, m in millions.items():
        assert ARCH_FACTS[name][0] / 1e6 == pytest.approx(m, abs=0.006), name


def test_wrn_34_10_total_and_forward_used_parameters() -> None:
    model = _built("wrn_34_10")
    assert count_parameters(model) == 48_262_586
    sub = sum(p.numel() for p in model.sub_block1.parameters())
    assert count_parameters(model) - sub == 46_160_474
    # Independently: parameters of modules reached by one forward (batch 1).
    hit: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, i, o: hit.append(m)) for m in model.modules()]
    try:
        with torch.no_grad():
            logits, feats = logits_and_features(model, torch.rand(1, 3, 32, 32))
    finally:
        for h in handles:
            h.remove()
    used = sum(p.numel() for m in set(hit) for p in m.parameters(recurse=False))
    assert used == 46_160_474
    assert round(used / 1e6, 2) == 46.16
    assert not any(m in hit for m in model.sub_block1.modules())
    assert logits.shape == (1, 10) and feats.shape == (1, 640)


def test_count_parameters_used_in_forward() -> None:
    model = WideResNet(16, 2, num_classes=10, sub_block1=True)
    sub = sum(p.numel() for p in model.sub_block1.parameters())
    assert count_parameters(model, used_in_forward=True) == count_parameters(model) - sub
    assert count_parameters(model, used_in_forward=True) == ARCH_FACTS["wrn_16_2"][0]


@pytest.mark.parametrize(
    "name,num_classes",
    [(n, 10) for n in CHEAP] + [("resnet18", 100), ("wrn_16_2", 100), ("small_cnn", 100)],
)
def test_output_and_feature_shapes(name: str, num_classes: int) -> None:
    model = _built(name, num_classes)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        logits, feats = logits_and_features(model, x)
        if num_classes == 10:  # forward() returns the same logits
            assert torch.allclose(model(x), logits, atol=1e-5)
    assert logits.shape == (1, num_classes)
    assert feats.shape == (1, ARCH_FACTS[name][1])


@pytest.mark.parametrize("name", [n for n in ARCH_FACTS if n != "wrn_34_10"])
def test_classifier_width_100_classes(name: str) -> None:
    # Construction only (forwards of the big nets are slow on CPU).
    head = [m for m in build_arch(name, num_classes=100).modules() if isinstance(m, nn.Linear)][-1]
    assert (head.in_features, head.out_features) == (ARCH_FACTS[name][1], 100)


def test_wrn_28_10_shapes_100_classes() -> None:
    model = _built("wrn_28_10", 100)
    with torch.no_grad():
        logits, feats = logits_and_features(model, torch.rand(1, 3, 32, 32))
    assert logits.shape == (1, 100) and feats.shape == (1, 640)
    assert not hasattr(model, "sub_block1")
    assert not hasattr(_built("wrn_16_2"), "sub_block1")


def test_feature_dim_keeps_mode() -> None:
    model = build_arch("small_cnn").train()
    assert feature_dim(model) == 128
    assert model.training and all(m.training for m in model.modules())


def test_preact_final_bn_variants() -> None:
    plain = _built("preact_resnet18").state_dict()
    final = _built("preact_resnet18_final_bn").state_dict()
    assert "bn.weight" not in plain and "bn.running_var" in final
    assert "layer2.0.shortcut.0.weight" in plain and "layer1.0.shortcut.0.weight" not in plain
    assert "bn.weight" in build_arch("preact_resnet18", final_bn=True).state_dict()


def test_mobilenetv2_cifar_layout() -> None:
    model = _built("mobilenetv2")
    blocks = list(model.layers)
    assert len(blocks) == 17
    assert [b.stride for b in blocks if b.stride == 2] == [2, 2, 2]  # stage 2 uses stride 1
    assert model.conv1.stride == (1, 1) and model.linear.in_features == 1280


def test_wrn_init_as_trades() -> None:
    model = _built("wrn_16_2")
    conv = model.block2.layer[0].conv1  # 32 -> 64, 3x3: fan_out = 64 * 9
    assert conv.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.bias == 0)
    assert torch.all(model.fc.bias == 0)


# -------------------------------------------------------------------- TRADES checkpoint keys


def _trades_wrn_34_10_keys() -> list[str]:
    """Key names of yaodongyu/TRADES ``model_cifar_wrn.pt``, written out from its naming."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight"]
    for group in ("block1", "sub_block1", "block2", "block3"):
        for i in range(5):
            p = f"{group}.layer.{i}."
            keys += [p + "bn1." + s for s in bn] + [p + "conv1.weight"]
            keys += [p + "bn2." + s for s in bn] + [p + "conv2.weight"]
            if i == 0:  # every group changes width in its first block (16->160->320->640)
                keys.append(p + "convShortcut.weight")
    keys += ["bn1." + s for s in bn] + ["fc.weight", "fc.bias"]
    return keys


def test_wrn_34_10_strict_loads_trades_names() -> None:
    model = _built("wrn_34_10")
    expected = _trades_wrn_34_10_keys()
    for literal in (
        "block1.layer.0.bn1.weight",
        "sub_block1.layer.4.conv2.weight",
        "block3.layer.4.conv2.weight",
        "bn1.running_mean",
        "fc.bias",
        "block2.layer.0.convShortcut.weight",
    ):
        assert literal in expected
    own = model.state_dict()
    assert sorted(own) == sorted(expected)
    # A synthetic checkpoint with those names (DataParallel prefix, nested) loads strictly.
    torch.manual_seed(1)
    synthetic = {
        "module." + k: torch.randn_like(own[k], dtype=torch.float32).to(own[k].dtype)
        for k in expected
    }
    from ardbench.models import extract_state_dict, load_state_dict_strict

    load_state_dict_strict(model, extract_state_dict({"state_dict": synthetic}))
    assert torch.equal(
        model.state_dict()["sub_block1.layer.4.conv2.weight"],
        synthetic["module.sub_block1.layer.4.conv2.weight"],
    )
    _built.cache_clear()  # the cached instance now holds random weights


# -------------------------------------------------------------------------------- specs


def _perturbed(name: str, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(2)
    model = build_arch(name, num_classes=num_classes)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t))
    return model


@pytest.mark.parametrize("nesting", ["raw", "state_dict", "model", "model_state_dict"])
def test_arch_path_round_trip_with_module_prefix(tmp_path: Path, nesting: str) -> None:
    model = _perturbed("small_cnn")
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    path = tmp_path / "w.pt"
    torch.save(sd if nesting == "raw" else {nesting: sd, "epoch": 3}, path)
    loaded = load_model(f"small_cnn:{path}")
    assert isinstance(loaded, LoadedModel)
    assert (loaded.arch, loaded.source, loaded.spec) == (
        "small_cnn",
        "state_dict",
        f"small_cnn:{path}",
    )
    assert loaded.sha256 == file_sha256(path)
    assert not loaded.module.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[k], v), k
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), model.eval()(x))


def test_arch_path_key_mismatch_names_keys(tmp_path: Path) -> None:
    sd = _perturbed("small_cnn").state_dict()
    sd.pop("linear.bias")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(StateDictMismatchError) as err:
        load_model(f"small_cnn:{path}")
    assert "linear.bias" in str(err.value) and "extra.weight" in str(err.value)
    assert str(path) in str(err.value)


def test_arch_path_wrong_num_classes(tmp_path: Path) -> None:
    path = tmp_path / "c100.pt"
    torch.save(_perturbed("small_cnn", 100).state_dict(), path)
    with pytest.raises(RuntimeError, match="num_classes"):
        load_model(f"small_cnn:{path}")
    assert load_model(f"small_cnn:{path}", num_classes=100).module.linear.out_features == 100


def test_missing_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(f"resnet18:{path}")
    with pytest.raises(FileNotFoundError, match="nope.pt2"):
        load_model(str(tmp_path / "nope.pt2"))


def test_weights_file_without_arch() -> None:
    with pytest.raises(ValueError, match="ARCH:PATH"):
        load_model("checkpoints/teacher.pt")


def test_unknown_arch_suggests() -> None:
    with pytest.raises(UnknownNameError, match="(?i:did you mean) 'resnet18'"):
        load_model("resnet19")
    with pytest.raises(UnknownNameError, match="(?i:did you mean) 'mobilenetv2'"):
        load_model("mobilenet_v2:/tmp/w.pt")
    with pytest.raises(UnknownNameError, match="wrn_34_10"):
        build_arch("wrn_34_1")


def test_fresh_model() -> None:
    loaded = load_model("small_cnn", num_classes=7)
    assert (loaded.source, loaded.arch) == ("fresh", "small_cnn")
    assert loaded.module.linear.out_features == 7 and not loaded.module.training
    assert loaded.sha256 == state_dict_sha256(loaded.module)


def test_state_dict_sha256() -> None:
    a, b = _perturbed("small_cnn"), _perturbed("small_cnn")
    assert state_dict_sha256(a) == state_dict_sha256(b)
    with torch.no_grad():
        b.conv1[1].running_mean[0] += 1e-3
    assert state_dict_sha256(a) != state_dict_sha256(b)
    assert len(state_dict_sha256(a)) == 64


def test_run_spec(tmp_path: Path) -> None:
    model = _perturbed("small_cnn", 7)
    run_dir = tmp_path / "runs" / "20240101-abc"
    run_dir.mkdir(parents=True)
    torch.save(model.state_dict(), run_dir / "model.pt")
    (run_dir / "model.json").write_text(json.dumps({"arch": "small_cnn", "num_classes": 7}))
    loaded = load_model("run:20240101-abc", runs_dir=tmp_path / "runs")
    assert (loaded.source, loaded.arch) == ("run", "small_cnn")
    assert loaded.sha256 == file_sha256(run_dir / "model.pt")
    assert loaded.module.linear.out_features == 7
    assert torch.equal(loaded.module.linear.weight, model.linear.weight)
    # RUN_ID may be the run directory itself.
    assert load_model(f"run:{run_dir}").sha256 == loaded.sha256
    with pytest.raises(FileNotFoundError, match="20240101-xyz"):
        load_model("run:20240101-xyz", runs_dir=tmp_path / "runs")


def test_robustbench_offline_missing_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    expected = tmp_path / "cifar10" / "Linf" / "Zhang2019Theoretically.pt"
    with pytest.raises(FileNotFoundError) as err:
        load_model("robustbench:Zhang2019Theoretically", model_dir=tmp_path)
    msg = str(err.value)
    assert str(expected) in msg
    assert "pass --download to fetch it, or place the file there" in msg
    # Default model dir from the environment.
    monkeypatch.setenv("ARDBENCH_MODEL_DIR", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match="env/cifar10/Linf/Chen2021LTD_WRN34_10.pt"):
        load_model("robustbench:Chen2021LTD_WRN34_10")
    with pytest.raises(UnknownNameError, match="Zhang2019Theoretically"):
        load_model("robustbench:Zhang2019Theoreticaly", model_dir=tmp_path)


# ---------------------------------------------------------------------------- features


def test_features_hook_on_last_linear() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 20), nn.ReLU(), nn.Linear(20, 5))
    x = torch.rand(3, 3, 8, 8, requires_grad=True)
    logits, feats = logits_and_features(model, x)
    assert feats.shape == (3, 20)
    assert torch.allclose(logits, model[3](feats)) and torch.allclose(logits, model(x))
    (logits.sum() + feats.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert feature_dim(model, (1, 3, 8, 8)) == 20
    assert not model[3]._forward_pre_hooks  # hook removed


def test_features_error_without_linear() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(FeatureError, match="forward_features"):
        logits_and_features(model, torch.rand(1, 3, 8, 8))


def test_export_archive_spec_and_features(tmp_path: Path) -> None:
    model = _perturbed("small_cnn").eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    path = tmp_path / "m.pt2"
    torch.export.save(program, path)
    loaded = load_model(str(path))
    assert (loaded.arch, loaded.source, loaded.sha256) == ("export", "export", file_sha256(path))
    module = loaded.module
    assert not module.training
    module.eval()  # allowed (torch itself refuses eval() on exported modules)
    with pytest.raises(NotImplementedError, match="fixed at export time"):
        module.train()
    x = torch.rand(5, 3, 32, 32, requires_grad=True)
    logits, feats = logits_and_features(module, x)
    with torch.no_grad():
        ref_logits, ref_feats = model.forward_features(x)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert torch.allclose(feats, ref_feats, atol=1e-5)
    feats.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert feature_dim(module) == 128


@pytest.mark.realdata
def test_resnet4b_pt2_clean_accuracy_and_features() -> None:
    if not (RESNET4B.is_file() and CIFAR10_TEST.is_file()):
        pytest.skip(f"shared data not found under {SHARED_DATA}")
    loaded = load_model(str(RESNET4B))
    assert loaded.sha256 == file_sha256(RESNET4B) and loaded.arch == "export"
    data = np.load(CIFAR10_TEST)
    x = torch.from_numpy(data["x_test"]).permute(0, 3, 1, 2).float().div(255)
    y = torch.from_numpy(data["y_test"]).long()
    assert x.shape == (1017, 3, 32, 32)
    with torch.no_grad():
        logits, feats = logits_and_features(loaded.module, x)
        assert torch.allclose(logits, loaded.module(x), atol=1e-5)
    correct = int((logits.argmax(1) == y).sum())
    assert correct == 786  # 77.29 %
    assert round(100 * correct / len(y), 2) == 77.29
    # Penultimate = input of the archive's last linear (linear2: 100 -> 10).
    assert feats.shape == (1017, 100)
    head = loaded.module.linear2
    assert torch.allclose(feats @ head.weight.T + head.bias, logits, atol=1e-4)
    assert feature_dim(loaded.module) == 100
