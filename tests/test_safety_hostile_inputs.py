"""A catalogue of hostile and malformed inputs, each through the command line in-process.

Every case asserts: the exit code (2: a user error), exactly one line on stderr that starts
``ardbench: error:`` and names the bad value, no traceback, no marker file written by hostile
code, no ``*.tmp`` left, and no file of the existing runs (a finished and an interrupted one)
changed, added or removed: a rejected run leaves no directory.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hostile_files as hf
import numpy as np
import pytest
import torch

from ardbench.cli import main
from ardbench.models import build_arch


@dataclass
class World:
    root: Path
    data: Path  # a good npz: 40 train, 8 test, labels 0-9
    runs: Path
    finished: Path
    interrupted: Path
    pt2: Path  # small_cnn exported with a dynamic batch
    fixed_pt2: Path  # exported with a fixed batch of 1
    five_pt2: Path  # 5 classes
    state_pt: Path  # small_cnn state dict


@dataclass
class Ctx:
    w: World
    tmp: Path
    marker: Path
    monkeypatch: pytest.MonkeyPatch

    def sd(self) -> dict[str, torch.Tensor]:
        """A fresh copy of small_cnn's state dict."""
        return torch.load(self.w.state_pt, weights_only=True)


_FAST = ["--set", "attack.steps=1", "--set", "train.batch_size=20"]
_EVAL = ["--set", "eval.attacks=clean", "--set", "eval.n_examples=2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from ardbench.recipes import resolve_config
    from ardbench.train import train

    root = tmp_path_factory.mktemp("world")
    data = hf.npz(
        root / "good.npz",
        x_train=hf.images(40),
        y_train=hf.labels(40),
        x_test=hf.images(8, seed=1),
        y_test=hf.labels(8, seed=1),
    )
    runs = root / "runs"
    common = ["--dataset", f"npz:{data}", "--student", "small_cnn", "--device", "cpu"]
    argv = ["run", "--method", "pgd_at", *common, "--epochs", "1", *_FAST, *_EVAL]
    assert main([*argv, "--runs", str(runs), "--quiet"]) == 0
    (finished,) = runs.iterdir()
    cfg = resolve_config(
        "pgd_at",
        cli={"dataset": f"npz:{data}", "student": "small_cnn", "device": "cpu"},
        sets=["train.epochs=2", "attack.steps=1", "train.batch_size=20", *_EVAL[1::2]],
    )
    interrupted = train(cfg, runs_dir=runs, progress=False, stop_after_epoch=1).run_dir
    torch.manual_seed(0)
    return World(
        root=root,
        data=data,
        runs=runs,
        finished=finished,
        interrupted=interrupted,
        pt2=hf.export_small_cnn(root / "ok.pt2"),
        fixed_pt2=hf.export_small_cnn(root / "fixed.pt2", dynamic=False),
        five_pt2=hf.export_small_cnn(root / "five.pt2", num_classes=5),
        state_pt=hf.torch_file(root / "small.pt", build_arch("small_cnn").state_dict()),
    )


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


def eval_argv(c: Ctx, spec: str, *extra: str, data: str | None = None) -> list[str]:
    return [
        "eval",
        spec,
        "--dataset",
        data or f"npz:{c.w.data}",
        "--n-examples",
        "2",
        "--attacks",
        "clean",
        "--device",
        "cpu",
        "--quiet",
        "--runs",
        str(c.w.runs),
        *extra,
    ]


def run_argv(c: Ctx, *extra: str, method: str = "pgd_at", data: str | None = None) -> list[str]:
    argv = ["run", "--method", method, "--student", "small_cnn", "--runs", str(c.w.runs)]
    if "--dataset" not in extra and "--recipe" not in extra:
        argv += ["--dataset", data or f"npz:{c.w.data}"]
    if "--epochs" not in extra:
        argv += ["--epochs", "1"]
    if "--device" not in extra:
        argv += ["--device", "cpu"]
    return [*argv, "--quiet", *_FAST, *_EVAL, *extra]


def teacher_argv(c: Ctx, spec: str) -> list[str]:
    return run_argv(c, "--teacher", spec, method="kd")


CASES: list = []


def case(expect: str, id: str, *, code: int = 2, marks=()) -> Callable:
    def deco(fn: Callable[[Ctx], list[str]]) -> Callable:
        CASES.append(pytest.param(fn, expect, code, id=id, marks=marks))
        return fn

    return deco


no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")

# ---------------------------------------------------------------------------- model files

PT2_PAYLOADS: dict[str, tuple[str, Callable[[Ctx, Path], Path]]] = {
    "pt2-sample-inputs-pickle": (
        r"sample_inputs/model\.pt.*imports posix\.system",
        lambda c, p: hf.with_member(c.w.pt2, p, "sample_inputs/model.pt", hf.evil_pickle(c.marker)),
    ),
    "pt2-sample-inputs-text-pickle": (
        r"sample_inputs/model\.pt.*posix\.system",
        lambda c, p: hf.with_member(
            c.w.pt2, p, "sample_inputs/model.pt", hf.evil_pickle_text(c.marker)
        ),
    ),
    "pt2-sample-inputs-torch-save": (
        r"sample_inputs/model\.pt.*weights-only",
        lambda c, p: hf.with_member(
            c.w.pt2, p, "sample_inputs/model.pt", hf.evil_torch_save(c.marker)
        ),
    ),
    "pt2-sample-inputs-legacy-stream": (
        r"sample_inputs/model\.pt.*posix\.system",
        lambda c, p: hf.with_member(
            c.w.pt2, p, "sample_inputs/model.pt", hf.evil_legacy_stream(c.marker)
        ),
    ),
    "pt2-pickled-weight": (
        r"weights/weight_0.*weights-only",
        lambda c, p: hf.pickled_weight(c.w.pt2, p, hf.evil_torch_save(c.marker)),
    ),
    "pt2-pickled-weight-text": (
        r"weights/weight_0.*posix\.system",
        lambda c, p: hf.pickled_weight(c.w.pt2, p, hf.evil_pickle_text(c.marker)),
    ),
    "pt2-opaque-constant": (
        r"opaque_obj_0.*posix\.system",
        lambda c, p: hf.object_constant(c.w.pt2, p, "opaque_obj_", hf.evil_pickle(c.marker)),
    ),
    "pt2-custom-object": (
        r"custom_obj_0.*weights-only",
        lambda c, p: hf.object_constant(c.w.pt2, p, "custom_obj_", hf.evil_torch_save(c.marker)),
    ),
    "pt2-sympy-eval": (
        r"model\.json.*symbolic expression",
        lambda c, p: hf.with_graph(c.w.pt2, p, hf.sympy_payload(c.marker)),
    ),
    "pt2-guard-exec": (
        r"model\.json.*guard code",
        lambda c, p: hf.with_graph(c.w.pt2, p, hf.guard_payload(c.marker)),
    ),
    "pt2-call-target": (
        r"model\.json.*calls 'torch\.serialization\.os\.system'",
        lambda c, p: hf.with_graph(c.w.pt2, p, hf.target_payload),
    ),
    "pt2-native-library": (
        r"aotinductor.*native code",
        lambda c, p: hf.write_zip(
            p, {**hf.members(c.w.pt2), "ok/data/aotinductor/model/model.so": b"\x7fELF"}
        ),
    ),
    "pt2-legacy-format": (
        r"serialized_example_inputs\.pt.*posix\.system",
        lambda c, p: hf.write_zip(
            p,
            {
                "version": b"8.0",
                "serialized_exported_program.json": b"{}",
                "serialized_example_inputs.pt": hf.evil_pickle(c.marker),
            },
        ),
    ),
    "pt2-duplicate-member": (
        r"appears more than once",
        lambda c, p: hf.write_zip(
            p,
            [
                *hf.members(c.w.pt2).items(),
                ("ok/data/sample_inputs/model.pt", hf.evil_pickle(c.marker)),
            ],
        ),
    ),
}


def _pt2_case(name: str, expect: str, build: Callable, as_teacher: bool) -> None:
    def argv(c: Ctx) -> list[str]:
        path = build(c, c.tmp / "hostile.pt2")
        return teacher_argv(c, str(path)) if as_teacher else eval_argv(c, str(path))

    case(expect, f"{name}-{'teacher' if as_teacher else 'eval'}")(argv)


for _name, (_expect, _build) in PT2_PAYLOADS.items():
    _pt2_case(_name, _expect, _build, as_teacher=False)
for _name in ("pt2-sample-inputs-pickle", "pt2-sympy-eval", "pt2-guard-exec"):
    _pt2_case(_name, *PT2_PAYLOADS[_name], as_teacher=True)


@case(r"zip bomb", "pt2-zip-bomb")
def _(c: Ctx) -> list[str]:
    import ardbench.models.archive as archive

    c.monkeypatch.setattr(archive, "_MIN_INFLATION_BYTES", 1 << 20)
    path = c.tmp / "bomb.pt2"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok/data/sample_inputs/model.pt", bytes(8 << 20))
    return eval_argv(c, str(path))


@case(r"truncated\.pt2 is not a torch\.export archive: not a zip", "pt2-truncated")
def _(c: Ctx) -> list[str]:
    blob = c.w.pt2.read_bytes()
    (c.tmp / "truncated.pt2").write_bytes(blob[: len(blob) // 2])
    return eval_argv(c, str(c.tmp / "truncated.pt2"))


@case(r"text\.pt2 is not a torch\.export archive", "pt2-not-a-zip")
def _(c: Ctx) -> list[str]:
    (c.tmp / "text.pt2").write_text("just text\n")
    return eval_argv(c, str(c.tmp / "text.pt2"))


@case(r"empty\.pt2 is not a loadable torch\.export archive", "pt2-empty-zip")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, str(hf.write_zip(c.tmp / "empty.pt2", {"x/archive_version": b"0"})))


@case(r"fixed\.pt2 was exported with a fixed batch of 1.*dynamic", "pt2-fixed-batch")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, str(c.w.fixed_pt2))


@case(r"five\.pt2.*outputs 5 logits.*labels up to \d", "pt2-too-few-classes")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, str(c.w.five_pt2))


@case(r"five\.pt2.*outputs 5 logits", "pt2-too-few-classes-teacher")
def _(c: Ctx) -> list[str]:
    return teacher_argv(c, str(c.w.five_pt2))


@case(r"fixed at export time.*— train a registered architecture", "pt2-as-student")
def _(c: Ctx) -> list[str]:
    argv = run_argv(c)
    argv[argv.index("--student") + 1] = str(c.w.pt2)
    return argv


@case(r"garbage\.pt is not a readable PyTorch weights file", "pt-garbage")
def _(c: Ctx) -> list[str]:
    (c.tmp / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    return eval_argv(c, f"small_cnn:{c.tmp / 'garbage.pt'}")


@case(r"evil\.pt holds more than tensors.*posix\.system", "pt-pickle-payload")
def _(c: Ctx) -> list[str]:
    path = c.tmp / "evil.pt"
    path.write_bytes(hf.evil_torch_save(c.marker))
    return eval_argv(c, f"small_cnn:{path}")


@case(r"evil\.pt holds more than tensors", "pt-pickle-payload-teacher")
def _(c: Ctx) -> list[str]:
    path = c.tmp / "evil.pt"
    path.write_bytes(hf.evil_torch_save(c.marker))
    return teacher_argv(c, f"small_cnn:{path}")


@case(r"empty\.pt is not a readable PyTorch weights file", "pt-empty")
def _(c: Ctx) -> list[str]:
    (c.tmp / "empty.pt").write_bytes(b"")
    return eval_argv(c, f"small_cnn:{c.tmp / 'empty.pt'}")


@case(r"list\.pt: expected a state dict \(a mapping\), got list", "pt-not-a-mapping")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, f"small_cnn:{hf.torch_file(c.tmp / 'list.pt', [1, 2, 3])}")


@case(r"wrong\.pt does not match SmallCNN: missing keys.*unexpected keys \(1\): foo", "pt-keys")
def _(c: Ctx) -> list[str]:
    path = hf.torch_file(c.tmp / "wrong.pt", {"foo": torch.zeros(3)})
    return eval_argv(c, f"small_cnn:{path}")


@case(r"wide\.pt does not fit SmallCNN \(wrong num_classes.*size mismatch", "pt-shapes")
def _(c: Ctx) -> list[str]:
    sd = build_arch("small_cnn", num_classes=100).state_dict()
    return eval_argv(c, f"small_cnn:{hf.torch_file(c.tmp / 'wide.pt', sd)}")


@case(r"nan\.pt: \S+ holds NaN or infinite values", "pt-nan-weights")
def _(c: Ctx) -> list[str]:
    sd = build_arch("small_cnn").state_dict()
    next(v for v in sd.values() if v.is_floating_point()).fill_(float("nan"))
    return eval_argv(c, f"small_cnn:{hf.torch_file(c.tmp / 'nan.pt', sd)}")


@case(r"ints\.pt: \S+ is torch\.int64", "pt-int-weights")
def _(c: Ctx) -> list[str]:
    sd = {k: v.long() if v.is_floating_point() else v for k, v in c.sd().items()}
    return eval_argv(c, f"small_cnn:{hf.torch_file(c.tmp / 'ints.pt', sd)}")


@case(r"w\.safetensors does not match SmallCNN: missing keys", "safetensors-keys")
def _(c: Ctx) -> list[str]:
    path = hf.safetensors_file(c.tmp / "w.safetensors", {"foo": torch.zeros(2)})
    return eval_argv(c, f"small_cnn:{path}")


@case(r"w\.safetensors: \S+ is torch\.int32", "safetensors-dtype")
def _(c: Ctx) -> list[str]:
    sd = {k: v.int() if v.is_floating_point() else v for k, v in c.sd().items()}
    return eval_argv(c, f"small_cnn:{hf.safetensors_file(c.tmp / 'w.safetensors', sd)}")


@case(r"bad\.safetensors is not a readable safetensors file", "safetensors-garbage")
def _(c: Ctx) -> list[str]:
    (c.tmp / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    return eval_argv(c, f"small_cnn:{c.tmp / 'bad.safetensors'}")


@case(r"huge\.safetensors is not a readable safetensors file", "safetensors-header-bomb")
def _(c: Ctx) -> list[str]:
    (c.tmp / "huge.safetensors").write_bytes((1 << 62).to_bytes(8, "little") + b"{}")
    return eval_argv(c, f"small_cnn:{c.tmp / 'huge.safetensors'}")


@case(r"'\S+w\.safetensors' looks like a weights file.*ARCH:PATH", "safetensors-no-arch")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, str(hf.safetensors_file(c.tmp / "w.safetensors", c.sd())))


@case(r"a \.pt2 archive carries its own architecture", "arch-with-pt2")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, f"small_cnn:{c.w.pt2}")


@case(r"unknown architecture 'smal_cnn'.*did you mean 'small_cnn'", "arch-unknown")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "smal_cnn")


@case(r"weights file for small_cnn not found: \S*nowhere\.pt", "weights-missing")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, f"small_cnn:{c.tmp / 'nowhere.pt'}")


@case(
    r"RobustBench model 'Standard' does not load from \S+md \(.*posix\.system", "robustbench-evil"
)
def _(c: Ctx) -> list[str]:
    ckpt = c.tmp / "md" / "cifar10" / "Linf" / "Standard.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(hf.evil_torch_save(c.marker))
    return eval_argv(c, "robustbench:Standard", "--model-dir", str(c.tmp / "md"))


def _run_copy(c: Ctx, which: str = "finished") -> Path:
    dest = c.tmp / "runs" / f"copy-{which}"
    shutil.copytree(getattr(c.w, which), dest)
    return dest


@case(r"model\.pt is not a readable PyTorch weights file", "run-spec-corrupt-weights")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c)
    (run / "model.pt").write_bytes(b"PK\x03\x04 this was a zip")
    return eval_argv(c, f"run:{run}")


@case(r"model\.json must hold \{\"arch\": NAME", "run-spec-bad-model-json")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c)
    (run / "model.json").write_text('{"arch": 7}')
    return eval_argv(c, f"run:{run}")


@case(r"model\.json is not readable JSON", "run-spec-model-json-garbage")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c)
    (run / "model.json").write_bytes(b"\xff\xfe garbage")
    return eval_argv(c, f"run:{run}")


@case(r"run 'no-such-run' not found", "run-spec-missing")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "run:no-such-run")


@case(r"model\.pt is not a readable PyTorch weights file", "run-spec-corrupt-teacher")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c)
    (run / "model.pt").write_bytes(b"\x80\x02}q\x00.")  # a dict pickle, not a torch file
    return teacher_argv(c, f"run:{run}")


# -------------------------------------------------------------------------------- recipes


def _recipe(c: Ctx, text: str | bytes) -> list[str]:
    path = c.tmp / "recipe.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return run_argv(c, "--recipe", str(path), "--dataset", f"npz:{c.w.data}")


@case(r"recipe \S+recipe\.yaml is not valid YAML.*python/object", "yaml-python-object")
def _(c: Ctx) -> list[str]:
    return _recipe(c, f'train: !!python/object/apply:os.system ["touch {c.marker}"]\n')


@case(r"recipe \S+recipe\.yaml is not valid YAML.*python/name", "yaml-python-name")
def _(c: Ctx) -> list[str]:
    return _recipe(c, "student: !!python/name:os.system\n")


@case(r"YAML aliases are not allowed \(line 2\)", "yaml-billion-laughs")
def _(c: Ctx) -> list[str]:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}] " for i in range(8)]
    return _recipe(c, "\n".join(lines) + "\n")


@case(r"YAML aliases are not allowed", "yaml-alias")
def _(c: Ctx) -> list[str]:
    return _recipe(c, "train:\n  epochs: 1\nstudent: *x\n")


@case(r"unknown key 'studnet'.*did you mean 'student'", "yaml-unknown-key")
def _(c: Ctx) -> list[str]:
    return _recipe(c, "studnet: small_cnn\n")


@case(r"'epoch'.*did you mean 'epochs'", "yaml-unknown-section-key")
def _(c: Ctx) -> list[str]:
    return _recipe(c, "train: {epoch: 3}\n")


@case(r"train\.lr: expected a number like 8/255 or 0\.031, got 'fast'", "yaml-wrong-type")
def _(c: Ctx) -> list[str]:
    return _recipe(c, "train: {lr: fast}\n")


@case(r"recipe\.yaml is larger than 1048576 bytes", "yaml-huge")
def _(c: Ctx) -> list[str]:
    return _recipe(c, "# " + "x" * (1 << 20) + "\n")


@case(r"recipe \S+recipe\.yaml must be a YAML mapping", "yaml-not-a-mapping")
def _(c: Ctx) -> list[str]:
    return _recipe(c, "- a\n- b\n")


@case(r"recipe \S+recipe\.yaml is not valid YAML \(line \d\): expected ','", "yaml-syntax")
def _(c: Ctx) -> list[str]:
    return _recipe(c, "train:\n  epochs: [1\n")


@case(r"attack\.eps = 8 is larger than the whole \[0,1\] pixel range.*8/255", "yaml-eps-8")
def _(c: Ctx) -> list[str]:
    return _recipe(c, "attack: {eps: 8}\n")


@case(r"recipe\.yaml cannot be read as UTF-8", "yaml-not-utf8")
def _(c: Ctx) -> list[str]:
    return _recipe(c, b"student: \xff\xfe\n")


@case(r"recipe file \S+nowhere\.yaml does not exist", "yaml-missing")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--recipe", str(c.tmp / "nowhere.yaml"))


# ----------------------------------------------------------------------------- data files


def _data(c: Ctx, name: str = "bad.npz", **arrays) -> str:
    return f"npz:{hf.npz(c.tmp / name, **arrays)}"


def _eval_data(c: Ctx, **arrays) -> list[str]:
    return eval_argv(c, "small_cnn", data=_data(c, **arrays))


def _run_data(c: Ctx, **arrays) -> list[str]:
    return run_argv(c, data=_data(c, **arrays))


X8, Y8 = hf.images(8), hf.labels(8)


@case(r"x_test must be 4-D images.*shape \(8, 3072\)", "npz-rank")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8.reshape(8, -1), y_test=Y8)


@case(r"x_train has non-finite values", "npz-nan")
def _(c: Ctx) -> list[str]:
    x = np.full((8, 3, 32, 32), 0.5, np.float32)
    x[3, 1, 2, 2] = np.nan
    return _run_data(c, x_train=x, y_train=Y8, x_test=X8, y_test=Y8)


@case(r"ok\.pt2' outputs 10 logits, but the data has labels up to 12", "npz-labels-vs-model")
def _(c: Ctx) -> list[str]:
    data = _data(c, x_test=hf.images(16), y_test=np.arange(16) % 13)
    return eval_argv(c, str(c.w.pt2), data=data)


@case(r"labels go up to 998, but only 11 of those 999 classes", "npz-labels-998")
def _(c: Ctx) -> list[str]:
    y = np.r_[np.arange(39) % 10, 998]
    return _run_data(c, x_train=hf.images(40), y_train=y, x_test=X8, y_test=Y8)


@case(r"labels go up to 998, but only 8 of those 999 classes occur in 8 labels", "npz-998-eval")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8, y_test=np.r_[np.arange(7), 998])


@case(r"num_classes=10 but a label is 998", "npz-labels-num-classes")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8, y_test=np.r_[Y8[:7], 998], num_classes=10)


@case(r"has no array 'y_test'", "npz-missing-array")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8)


@case(r"has no array 'y_train'", "npz-missing-train-labels")
def _(c: Ctx) -> list[str]:
    return _run_data(c, x_train=X8, x_test=X8, y_test=Y8)


@case(r"text\.npz is not an \.npz file", "npz-not-a-zip")
def _(c: Ctx) -> list[str]:
    (c.tmp / "text.npz").write_text("x_test,y_test\n1,2\n")
    return eval_argv(c, "small_cnn", data=f"npz:{c.tmp / 'text.npz'}")


@case(r"plain\.npz is not an \.npz file", "npz-is-npy")
def _(c: Ctx) -> list[str]:
    with open(c.tmp / "plain.npz", "wb") as fh:
        np.save(fh, X8)
    return eval_argv(c, "small_cnn", data=f"npz:{c.tmp / 'plain.npz'}")


@case(r"cut\.npz (is not an \.npz file|.*cannot be read)", "npz-truncated")
def _(c: Ctx) -> list[str]:
    blob = Path(c.w.data).read_bytes()
    (c.tmp / "cut.npz").write_bytes(blob[: len(blob) // 3])
    return eval_argv(c, "small_cnn", data=f"npz:{c.tmp / 'cut.npz'}")


@case(r"array 'y_test' cannot be read \(an object array", "npz-object-array")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8, y_test=np.array([hf.Evil(c.marker)] * 8, dtype=object))


@case(r"y_test must hold integer labels, got dtype float64", "npz-float-labels")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8, y_test=Y8.astype(float))


@case(r"y_test has a negative label \(-1\)", "npz-negative-label")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8, y_test=np.r_[Y8[:7], -1])


@case(r"y_test has 7 labels for 8 images", "npz-label-count")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8, y_test=Y8[:7])


@case(r"float x_test must lie in \[0,1\], found \[0, 255\]", "npz-float-range")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8.astype(np.float32), y_test=Y8)


@case(r"has no test images", "npz-empty")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8[:0], y_test=Y8[:0])


@case(r"num_classes must be one integer, got float64", "npz-num-classes-float")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8, y_test=Y8, num_classes=10.5)


@case(r"x_test has dtype <U1, not numbers", "npz-strings")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=np.full((8, 32, 32, 3), "a"), y_test=Y8)


@case(r"y_test has a label of 18446744073709551615, not a class index", "npz-huge-label")
def _(c: Ctx) -> list[str]:
    return _eval_data(c, x_test=X8, y_test=np.r_[Y8[:7], 0].astype(np.uint64) - np.uint64(1))


@case(r"student 'small_cnn' does not run on the data's images.*\(1, 32, 32\)", "npz-1-channel")
def _(c: Ctx) -> list[str]:
    x = hf.images(40, shape=(32, 32, 1))
    return _run_data(c, x_train=x, y_train=hf.labels(40), x_test=X8[..., :1], y_test=Y8)


@case(r"array 'x_test' is in both", "npz-shared-array")
def _(c: Ctx) -> list[str]:
    a = hf.npz(c.tmp / "a.npz", x_test=X8, y_test=Y8)
    return eval_argv(c, "small_cnn", data=f"npz:{a}+{c.w.data}")


@case(r"npz file \S+nowhere\.npz does not exist", "npz-missing-file")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", data=f"npz:{c.tmp / 'nowhere.npz'}")


# ------------------------------------------------------------------------------- settings


@case(r"--eps must be > 0, got -1", "eval-eps-negative")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--eps=-1")


@case(r"--eps = 8 is larger than the whole \[0,1\] pixel range.*did you mean 8/255", "eval-eps-8")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--eps", "8")


@case(r"--eps must be > 0, got 0", "eval-eps-zero")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--eps", "0/255")


@case(r"expected a number like 8/255.*'eight'", "eval-eps-word")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--eps", "eight")


@case(r"expected a finite number|expected a number like 8/255.*'nan'", "eval-eps-nan")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--eps", "nan")


@case(r"--eps must be > 0, got 0\.0{399}1 ", "eval-eps-underflow")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--eps", "1e-400")


@case(
    r"--eps = 300/255 is larger than the whole \[0,1\] pixel range — e\.g\. 8/255$", "eval-eps-300"
)
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--eps", "300/255")


@case(r"\\x1b\[31mred\.pt2 is not a torch\.export archive", "pt2-escape-in-name")
def _(c: Ctx) -> list[str]:
    (c.tmp / "\x1b[31mred.pt2").write_text("x")
    return eval_argv(c, str(c.tmp / "\x1b[31mred.pt2"))


@case(r"--n-examples must be >= 1, got 0", "eval-n-zero")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn") + ["--n-examples", "0"]


@case(r"has 8 test points; cannot take the first 100", "eval-n-too-many")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn") + ["--n-examples", "100"]


@case(r"--seed must be >= 0, got -3", "eval-seed-negative")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--seed=-3")


@case(r"unknown attack column\(s\) 'pgd21'", "eval-attack-unknown")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn") + ["--attacks", "clean,pgd21"]


@case(r"--aa-batch-size must be >= 1, got 0", "eval-aa-batch")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--aa-batch-size", "0")


@case(r"--chunk-size must be >= 1, got -5", "eval-chunk")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--chunk-size=-5", "--state-dir", str(c.tmp / "st"))


@case(r"argument --norm: invalid choice: 'L3'", "eval-norm")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--norm", "L3")


@case(r"--json \S+: cannot write a file there", "eval-json-is-a-dir")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--json", str(c.tmp))


@case(r"evaluation state \S+ is not a state file", "eval-state-corrupt")
def _(c: Ctx) -> list[str]:
    argv = eval_argv(c, f"small_cnn:{c.w.state_pt}", "--state-dir", str(c.tmp / "st"))
    assert main(argv) == 0
    (state,) = (c.tmp / "st").glob("eval-*.json")
    state.write_text("[1, 2")  # the state file this evaluation uses, corrupt
    return argv


@case(r"train\.seed must be >= 0, got -1", "run-seed-negative")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--seed=-1")


@case(r"train\.epochs must be > 0, got 0", "run-epochs-zero")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--epochs", "0")


@case(r"train\.lr must be > 0, got -0\.1", "run-lr-negative")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--set", "train.lr=-0.1")


@case(r"attack\.eps = 2 is larger than the whole \[0,1\] pixel range.*2/255", "run-eps-2")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--set", "attack.eps=2")


@case(r"attack\.eps must be > 0, got 0", "run-eps-zero")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--set", "attack.eps=0")


@case(r"eval\.eps must be > 0, got -1", "run-eval-eps-negative")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--set", "eval.eps=-1")


@case(r"eval\.n_examples must be > 0, got 0", "run-n-examples-zero")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--set", "eval.n_examples=0")


@case(r"eval\.n_examples=100, but \S+ has 8 test points", "run-n-examples-too-many")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--set", "eval.n_examples=100")


@case(r"--state-dir \S+ is a file", "eval-state-dir-is-a-file")
def _(c: Ctx) -> list[str]:
    (c.tmp / "st").write_text("x")
    return eval_argv(c, "small_cnn", "--state-dir", str(c.tmp / "st"))


@case(r"train\.batch_size must be > 0, got 0", "run-batch-zero")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--set", "train.batch_size=0")


@case(r"train\.train_subset must be > 0, got -4", "run-subset-negative")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--set", "train.train_subset=-4")


@case(r"eval\.attacks must be one of .*'pgd30'", "run-attack-unknown")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--set", "eval.attacks=clean,pgd30")


@case(r"argument --epochs: invalid int value: 'ten'", "run-epochs-word")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--epochs", "ten")


@case(r"unknown method 'pgdat'", "run-method-unknown")
def _(c: Ctx) -> list[str]:
    return run_argv(c, method="pgdat")


@case(r"method 'kd' distils from a teacher.*--teacher", "run-no-teacher")
def _(c: Ctx) -> list[str]:
    return run_argv(c, method="kd")


@case(r"train\.holdout=40 leaves no training data", "run-holdout-all")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--set", "train.holdout=40")


# -------------------------------------------------------------------------------- devices


@case(r"device 'cuda' asked for, but no CUDA GPU is available", "eval-cuda", marks=no_gpu)
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--device", "cuda")


@case(r"device 'cuda:7' asked for, but no CUDA GPU", "run-cuda-7", marks=no_gpu)
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--device", "cuda:7")


@case(r"device 'tpu' is not a device name", "eval-device-name")
def _(c: Ctx) -> list[str]:
    return eval_argv(c, "small_cnn", "--device", "tpu")


@case(r"device 'meta' is not supported", "run-device-meta")
def _(c: Ctx) -> list[str]:
    return run_argv(c, "--device", "meta")


# -------------------------------------------------------------------------------- records


def _add(c: Ctx, name: str, blob: bytes | str) -> list[str]:
    path = c.tmp / name
    path.write_bytes(blob if isinstance(blob, bytes) else blob.encode())
    lb = c.tmp / "lb"
    return ["leaderboard", "--add", str(path), "--runs", str(lb / "runs"), "--out", str(lb)]


def _record(c: Ctx, **changes) -> str:
    record = json.loads((c.w.finished / "record.json").read_text())
    record.update(changes)
    return json.dumps(record)


@case(r"garbage\.json: record: not valid JSON", "leaderboard-add-garbage")
def _(c: Ctx) -> list[str]:
    return _add(c, "garbage.json", "{not json")


@case(r"binary\.json: record: not valid JSON", "leaderboard-add-binary")
def _(c: Ctx) -> list[str]:
    return _add(c, "binary.json", b"\xff\xd8\xff\xe0 a jpeg")


@case(r"deep\.json: record: JSON nested too deeply", "leaderboard-add-deep")
def _(c: Ctx) -> list[str]:
    return _add(c, "deep.json", "[" * 100_000 + "]" * 100_000)


@case(r"record field 'run_id'", "leaderboard-add-path-id")
def _(c: Ctx) -> list[str]:
    return _add(c, "r.json", _record(c, run_id="../../escape"))


@case(r"record field 'eval'", "leaderboard-add-missing-field")
def _(c: Ctx) -> list[str]:
    record = json.loads(_record(c))
    del record["eval"]
    return _add(c, "r.json", json.dumps(record))


@case(r"record field 'epochs'", "leaderboard-add-wrong-type")
def _(c: Ctx) -> list[str]:
    return _add(c, "r.json", _record(c, epochs="many"))


@case(r"no run record at \S+nowhere", "leaderboard-add-missing")
def _(c: Ctx) -> list[str]:
    return ["leaderboard", "--add", str(c.tmp / "nowhere"), "--runs", str(c.tmp / "lb")]


@case(r"a\.json: record: not valid JSON", "compare-garbage")
def _(c: Ctx) -> list[str]:
    (c.tmp / "a.json").write_text("]")
    return ["compare", str(c.tmp / "a.json"), "--leaderboard-runs", str(c.w.runs)]


@case(r"e\.json", "leaderboard-attach-garbage")
def _(c: Ctx) -> list[str]:
    (c.tmp / "e.json").write_text('{"accuracy": "all of it"}')
    (c.tmp / "lb").mkdir()
    return ["leaderboard", "--attach", str(c.tmp / "e.json"), "--runs", str(c.tmp / "lb")]


# ------------------------------------------------------------------------ run directories


@case(r"\S+nowhere is not an ardbench run directory \(no config\.json\)", "resume-missing")
def _(c: Ctx) -> list[str]:
    return ["run", "--resume", str(c.tmp / "nowhere"), "--quiet"]


@case(r"already finished \(record\.json exists\)", "resume-finished")
def _(c: Ctx) -> list[str]:
    return ["run", "--resume", str(c.w.finished), "--quiet"]


@case(r"checkpoint\.pt is not a readable checkpoint", "resume-garbage-checkpoint")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c, "interrupted")
    (run / "checkpoint.pt").write_bytes(np.random.default_rng(1).bytes(1000))
    return ["run", "--resume", str(run), "--quiet"]


@case(r"checkpoint\.pt is not a readable checkpoint.*posix\.system", "resume-evil-checkpoint")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c, "interrupted")
    (run / "checkpoint.pt").write_bytes(hf.evil_torch_save(c.marker))
    return ["run", "--resume", str(run), "--quiet"]


@case(r"checkpoint\.pt does not fit this run's networks", "resume-foreign-checkpoint")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c, "interrupted")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["student"] = {"foo": torch.zeros(1)}
    torch.save(state, run / "checkpoint.pt")
    return ["run", "--resume", str(run), "--quiet"]


@case(r"config\.json is not readable JSON", "resume-config-garbage")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c, "interrupted")
    (run / "config.json").write_text('{"method": ')
    return ["run", "--resume", str(run), "--quiet"]


@case(r"config\.json must be a mapping, got list", "resume-config-list")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c, "interrupted")
    (run / "config.json").write_text("[1, 2]")
    return ["run", "--resume", str(run), "--quiet"]


@case(r"train\.seed must be >= 0, got -1", "resume-config-edited")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c, "interrupted")
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["seed"] = -1
    (run / "config.json").write_text(json.dumps(cfg))
    return ["run", "--resume", str(run), "--quiet"]


@case(r"log\.jsonl line 1 is not JSON", "resume-log-garbage")
def _(c: Ctx) -> list[str]:
    run = _run_copy(c, "interrupted")
    (run / "log.jsonl").write_text("{torn\n" + (run / "log.jsonl").read_text())
    return ["run", "--resume", str(run), "--quiet"]


@case(r"--resume continues a run with its own saved config; --epochs", "resume-with-flags")
def _(c: Ctx) -> list[str]:
    return ["run", "--resume", str(c.w.interrupted), "--epochs", "5"]


# ---------------------------------------------------------------------------------- runner


def _leftovers(*roots: Path) -> list[Path]:
    return [p for r in roots for p in r.rglob("*.tmp")]


@pytest.mark.parametrize("build,expect,code", CASES)
def test_hostile_input(build, expect, code, world, tmp_path, capsys, monkeypatch) -> None:
    ctx = Ctx(world, tmp_path, tmp_path / "MARKER", monkeypatch)
    argv = build(ctx)
    before = _snapshot(world.root)
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("ardbench: error: "), err
    assert re.search(expect, lines[0]), lines[0]
    assert "Traceback" not in out + err and "crash" not in err
    assert not ctx.marker.exists(), "hostile code ran"
    assert _snapshot(world.root) == before, "a file of another run changed"
    assert not _leftovers(world.root, tmp_path)


def test_catalogue_size() -> None:
    assert len(CASES) >= 60


def test_payloads_are_live(world, tmp_path) -> None:
    """The catalogue's main payloads do run code when torch loads the archive unchecked."""
    import io

    from ardbench.models.archive import quiet_torch_export

    for name in ("pt2-sample-inputs-pickle", "pt2-sympy-eval", "pt2-guard-exec"):
        marker = tmp_path / f"marker-{name}"
        ctx = Ctx(world, tmp_path, marker, pytest.MonkeyPatch())
        path = PT2_PAYLOADS[name][1](ctx, tmp_path / f"{name}.pt2")
        with quiet_torch_export():
            try:  # sympy strings run at load, guard code at the first forward
                torch.export.load(io.BytesIO(path.read_bytes())).module()(torch.rand(2, 3, 32, 32))
            except Exception:
                pass
        assert marker.exists(), f"{name}: torch did not run the payload"


def test_trust_model_opts_out(world, tmp_path, capsys) -> None:
    """--trust-model hands the archive to torch as it is: the payload runs (the documented risk),
    and the failure that follows is still one line."""
    marker = tmp_path / "MARKER"
    path = PT2_PAYLOADS["pt2-sample-inputs-pickle"][1](
        Ctx(world, tmp_path, marker, pytest.MonkeyPatch()), tmp_path / "x.pt2"
    )
    ctx = Ctx(world, tmp_path, marker, pytest.MonkeyPatch())
    assert main([*eval_argv(ctx, str(path)), "--trust-model"]) == 2
    assert marker.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_trusted_sha256_skips_the_check(world, tmp_path, monkeypatch) -> None:
    """An archive the checks refuse loads when its sha256 is listed (then torch decides)."""
    from ardbench.io import file_sha256
    from ardbench.models import UnsafeModelError, load_model

    def harmless_guard(graph: dict) -> None:
        graph["guards_code"] = ["len('abc') == 3"]

    path = hf.with_graph(world.pt2, tmp_path / "g.pt2", harmless_guard)
    with pytest.raises(UnsafeModelError, match="guard code"):
        load_model(str(path))
    (tmp_path / "list.txt").write_text(f"{file_sha256(path)}  g.pt2  # checked by hand\n")
    monkeypatch.setenv("ARDBENCH_TRUSTED_SHA256", str(tmp_path / "list.txt"))
    assert load_model(str(path)).sha256 == file_sha256(path)


def test_finished_run_shares_model_safetensors(world) -> None:
    """The run's model.safetensors holds model.pt's tensors and loads as ARCH:PATH."""
    from safetensors.torch import load_file

    from ardbench.models import load_model, state_dict_sha256

    shared = load_file(world.finished / "model.safetensors")
    saved = torch.load(world.finished / "model.pt", weights_only=True)
    assert shared.keys() == saved.keys()
    assert all(torch.equal(shared[k], saved[k]) for k in saved)
    loaded = load_model(f"small_cnn:{world.finished / 'model.safetensors'}")
    assert state_dict_sha256(loaded.module) == state_dict_sha256(
        load_model(f"run:{world.finished}").module
    )


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["resnet2b_cifar10_linf2.pt2", "resnet4b_cifar10_linf2.pt2"])
def test_shipped_archives_pass_the_check_untrusted(name, shared_data, monkeypatch) -> None:
    """The shipped archives are trusted by hash, and would pass the check anyway."""
    from ardbench.models import archive, trust

    path = shared_data / "models" / name
    blob = path.read_bytes()
    assert hashlib.sha256(blob).hexdigest() in trust.SHIPPED_SHA256
    repacked = archive.checked_archive(str(path), blob)
    monkeypatch.setattr(trust, "SHIPPED_SHA256", {})
    from ardbench.models import load_model

    x = torch.rand(3, 3, 32, 32)
    module = load_model(str(path)).module  # checked, then loaded from the repacked bytes
    with archive.quiet_torch_export():
        reference = torch.export.load(str(path)).module()  # the original file (shipped)
    assert len(repacked) > 0 and torch.allclose(module(x), reference(x))
