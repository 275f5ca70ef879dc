"""``ardbench doctor`` (issue 27): the report on a CPU, and the GPU checks' logic with the
CPU stand-in for CUDA graphs (the real ones run on CUDA only: ``ardbench doctor`` there)."""

from __future__ import annotations

import json
import time

import pytest

from ardbench import doctor_gpu
from ardbench.cli import main
from ardbench.doctor import build_report, gpu_skip_reason
from ardbench.train.graph import EagerReplay, _EagerCaptured


def test_doctor_on_a_cpu_reports_and_says_why_gpu_checks_were_skipped(tmp_path, capsys):
    out = tmp_path / "report" / "doctor.json"
    t0 = time.perf_counter()
    assert main(["doctor", "--json", str(out)]) == 0
    assert time.perf_counter() - t0 < 60
    report = json.loads(out.read_text())
    assert report["versions"]["torch"] and "pyautoattack" in report["versions"]
    assert report["devices"]["cpu_count"] >= 1 and report["threads"]["torch_threads"] >= 1
    assert report["gpu_checks"]["skipped"]  # why, in words
    printed = capsys.readouterr().out
    assert "GPU checks skipped" in printed and str(out) in printed.replace("\n", "")


def test_the_report_lists_what_is_cached_where_ardbench_cache_says(tmp_path, monkeypatch):
    monkeypatch.setenv("ARDBENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("ARDBENCH_MODEL_DIR", raising=False)
    monkeypatch.delenv("ARDBENCH_DATA_DIR", raising=False)
    (tmp_path / "demo" / "teacher-abc").mkdir(parents=True)
    (tmp_path / "demo" / "teacher-abc-pid7").mkdir()  # an unfinished one: not listed
    rb = tmp_path / "robustbench" / "cifar10" / "Linf" / "X.pt"
    rb.parent.mkdir(parents=True)
    rb.write_bytes(b"")
    folders = build_report(gpu=False)["folders"]
    assert folders["cache"]["path"] == str(tmp_path)
    assert folders["cached"]["demo_teachers"] == ["teacher-abc"]
    assert folders["cached"]["robustbench"] == ["cifar10/Linf/X.pt"]
    assert folders["data"]["path"] == str(tmp_path / "data") and not folders["data"]["exists"]


def test_gpu_skip_reasons():
    assert "not a CUDA device" in gpu_skip_reason("cpu")
    assert build_report(gpu=False)["gpu_checks"] == {"skipped": "--no-gpu-checks"}


def test_captured_vs_eager_logic_with_the_stand_in():
    r = doctor_gpu.captured_vs_eager("cpu", "small", backend=EagerReplay(), warmup=2)
    assert r["passed"] and r["graph_off"] is None, r
    assert r["counts"]["captures"] == 1 and r["counts"]["eager"] == 1  # the partial batch
    assert any("self-check passed" in n for n in r["notes"])
    json.dumps(r)  # JSON-ready


class _Nudging(EagerReplay):
    """A capture whose replays also change the loss: the checks must say so."""

    def capture(self, fn):
        def wrong():
            out = fn()
            return {k: v * 1.5 for k, v in out.items()}

        return _EagerCaptured(wrong, wrong())


def test_a_wrong_capture_fails_the_check():
    r = doctor_gpu.captured_vs_eager("cpu", "small", backend=_Nudging(), warmup=2)
    assert not r["passed"] and "self-check" in r["graph_off"]


def test_images_per_second_and_a_check_that_raises(monkeypatch):
    r = doctor_gpu.images_per_second("cpu", "small", timed=2, backend=EagerReplay(), warmup=2)
    assert r["images_per_s"]["eager"] > 0 and r["images_per_s"]["captured"] > 0

    def broken(device):
        raise RuntimeError("no kernel image")

    monkeypatch.setattr(doctor_gpu, "compliance", broken)
    monkeypatch.setattr(doctor_gpu, "captured_vs_eager", lambda d, s: {"check": s, "passed": True})
    monkeypatch.setattr(doctor_gpu, "images_per_second", lambda d, s: {"check": s, "passed": True})
    results = doctor_gpu.run_gpu_checks("cpu")
    (bad,) = [r for r in results if not r["passed"]]
    assert bad["error"] == "RuntimeError: no kernel image"


@pytest.mark.parametrize("shape", sorted(doctor_gpu.SHAPES))
def test_shapes_name_real_architectures(shape):
    from ardbench.models import ARCHS

    _, method, student, teacher, batch, steps = doctor_gpu.SHAPES[shape]
    assert student in ARCHS.names() and teacher in ARCHS.names() and batch > 1 and steps > 0
