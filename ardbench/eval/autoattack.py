"""The AutoAttack adapter: pyautoattack's own call, its own state file, and what its log alone says.

Each chunk of points is one call ``AutoAttack(model, norm=, eps=, version=, seed=, device=)
.run_standard_evaluation(x, y, batch_size=, state_path=)`` of the PyPI package ``pyautoattack``
0.2.0 (keyword-only API; fra31/auto-attack@a392200). With one chunk (the default without an
evaluation state) that is RobustBench's call: the state file changes no number (the per-point
flags equal a plain ``run_standard_evaluation(x, y, batch_size=)``'s, tested).

**State.** ``state_path`` makes pyautoattack keep an ``EvaluationState`` file: its per-point
robust flags (saved after the clean pass and after every batch of every attack), the attacks it
has finished and its clean accuracy. That file is where a chunk's per-point AA result lives:
ardbench's own evaluation state records, per finished chunk, only what pyautoattack's state does
not hold (the breakdown, AutoAttack's warnings, the file's sha256), and a resumed evaluation
reads the flags of finished chunks back with ``EvaluationState.from_disk``.

A chunk interrupted part-way is run again from its start, not continued from pyautoattack's
state, for three reasons. (1) pyautoattack 0.2.0 cannot restore its own state: ``to_disk``
writes the set of attacks with ``json.dump(default=str)`` (a string such as ``"{'apgd-ce',
...}"``) and ``from_disk`` does not parse it back, so ``run_standard_evaluation(state_path=
<existing file>)`` always raises "The state was created with a different set of attacks"
(pinned by ``tests/test_eval.py::test_pyautoattack_0_2_cannot_restore_its_state``); past
that, its restore branch never defines ``y_adv`` and would raise ``UnboundLocalError``.
(2) Its list of finished attacks is saved at most once a minute (the flags after every batch),
so on disk it lags behind the flags. (3) Even when fixed, a restore continues the attack in
progress over the points still robust, in other batches than an uninterrupted run: AutoAttack's
random initialisations depend on the batch composition, so the chunk's number could change.
Re-running the chunk keeps a resumed evaluation equal to an uninterrupted one; a chunk is at
most ``chunk_size`` points.

**Log.** Two things exist only in AutoAttack's log (logger ``"auto-attack"``), so a handler is
attached for exactly these during the call:

- its warnings (records at WARNING: the checks of its ``checks.py``: randomised defence,
  probability output, dynamic defence, zero gradients, Square succeeding where the gradient
  attacks did not, too many target classes), kept as ``"autoattack: ..."`` in the result's
  warnings (they make ``model_info["unreliable"]`` true);
- the moment each attack starts (its ``"running <attack>"`` record): pyautoattack has no per-
  attack hook, so at that moment the adapter reads the robust flags from pyautoattack's state
  file (saved after the previous attack's last batch). The per-attack breakdown (points
  attacked and broken by each attack) is the difference of these flags, and the seconds per
  attack the difference of the records' times. No number is parsed from a log message.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..io import file_sha256
from .columns import ball_violation
from .result import AA_ATTACKS

if TYPE_CHECKING:
    from .runners import ColumnRun

__all__ = [
    "AA_LOGGER",
    "AALog",
    "AAChunk",
    "aa_runner",
    "aggregate_aa",
    "load_aa_flags",
    "run_autoattack",
]

logger = logging.getLogger(__name__)

AA_LOGGER = "auto-attack"  # the logger pyautoattack's AutoAttack writes to
_START = "running "  # AutoAttack logs "running <attack>" right before each attack


class AALog(logging.Handler):
    """AutoAttack's warnings, and a callback when an attack starts (see the module doc)."""

    def __init__(self, on_start: Callable[[str, float], None] | None = None) -> None:
        super().__init__(level=logging.DEBUG)
        self.warnings: list[str] = []
        self.on_start = on_start

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        logger.debug("autoattack: %s", msg)
        if record.levelno >= logging.WARNING:
            if msg not in self.warnings:
                self.warnings.append(msg)
        elif self.on_start is not None and msg.startswith(_START):
            self.on_start(msg[len(_START) :].strip(), record.created)

    @contextlib.contextmanager
    def attached(self) -> Iterator[AALog]:
        aa_logger = logging.getLogger(AA_LOGGER)
        level, propagate = aa_logger.level, aa_logger.propagate
        # AutoAttack logs its attack starts at DEBUG; not propagating keeps them off the console
        aa_logger.setLevel(logging.DEBUG)
        aa_logger.propagate = False
        aa_logger.addHandler(self)
        try:
            yield self
        finally:
            aa_logger.removeHandler(self)
            aa_logger.setLevel(level)
            aa_logger.propagate = propagate


def _evaluation_state() -> Any:
    """pyautoattack's ``EvaluationState`` class (its state file's reader and writer)."""
    from .._compat import import_autoattack

    import_autoattack()
    return importlib.import_module("pyautoattack.state").EvaluationState


def load_aa_flags(path: Path, sha256: str | None = None, n: int | None = None) -> Tensor | None:
    """The robust flags in pyautoattack's state file ``path`` (CPU bool), or None when the file
    is missing, unreadable, altered (``sha256``) or holds another number of points (``n``)."""
    path = Path(path).resolve()
    try:
        if not path.is_file() or (sha256 is not None and file_sha256(path) != sha256):
            return None
        with warnings.catch_warnings():
            # the file records the path it was written to; a moved state folder is fine (its
            # identity is the sha256 ardbench recorded)
            warnings.filterwarnings("ignore", message="The given path is different")
            flags = _evaluation_state().from_disk(path).robust_flags
    except (OSError, ValueError, TypeError, RuntimeError, KeyError):
        return None
    if flags is None or flags.dim() != 1 or (n is not None and len(flags) != n):
        return None
    out: Tensor = flags.to("cpu", torch.bool)
    return out


@dataclass
class AAChunk:
    """One AutoAttack call: per-point robust flags (CPU) and what is recorded about the call."""

    robust: Tensor
    info: dict[str, Any]


def run_autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str,
    seed: int,
    batch_size: int,
    version: str,
    state_path: Path | None = None,
    on_start: Callable[[str], None] | None = None,
) -> AAChunk:
    """AutoAttack on (x, y), pyautoattack keeping its state in ``state_path`` (a temporary file
    when None). ``info``: ``clean``, ``attacks``, ``per_attack`` {attack: attacked, broken,
    seconds}, ``robust``, ``warnings``, ``flags_consistent``, ``ball_violation``, and ``state``
    and ``state_sha256`` when ``state_path`` is given."""
    from .._compat import import_autoattack

    aa_pkg = import_autoattack()
    x = x.detach().to(torch.float32).contiguous()  # APGD-T's checks .view() the gradients
    with contextlib.ExitStack() as stack:
        if state_path is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ardbench-aa-")))
            path = tmp / "state.json"
        else:
            path = Path(state_path).resolve()  # from_disk warns when the stored path differs
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)  # a partial chunk's file: pyautoattack cannot restore it
        starts: list[tuple[str, Tensor | None, float]] = []

        def started(attack: str, when: float) -> None:
            starts.append((attack, load_aa_flags(path), when))
            if on_start is not None:
                on_start(attack)

        log = AALog(started)
        with log.attached():
            adversary = aa_pkg.AutoAttack(
                model, norm=norm, eps=eps, version=version, seed=seed, device=x.device
            )
            x_adv, y_adv = adversary.run_standard_evaluation(
                x, y, batch_size=batch_size, state_path=path
            )
        end = time.time()
        final = load_aa_flags(path, n=len(x))
        returned = (y_adv.to(y.device) == y).cpu()
        robust = final if final is not None else returned
        attacks = list(adversary.attacks_to_run)
        per_attack = _per_attack(attacks, starts, robust, end)
        info: dict[str, Any] = {
            "clean": _clean_count(starts, robust),
            "attacks": attacks,
            "per_attack": per_attack,
            "robust": int(robust.sum()),
            "warnings": list(log.warnings),
            "flags_consistent": final is not None
            and torch.equal(final, returned)
            and all(flags is not None for _, flags, _ in starts),
            "ball_violation": ball_violation(x_adv.to(x.device), x, eps, norm),
        }
        if state_path is not None:
            info["state"] = path.name
            info["state_sha256"] = file_sha256(path)
    return AAChunk(robust=robust, info=info)


def _clean_count(starts: list[tuple[str, Tensor | None, float]], robust: Tensor) -> int:
    # the flags when the first attack starts are AutoAttack's clean flags
    first = starts[0][1] if starts else robust
    return int(first.sum()) if first is not None else -1


def _per_attack(
    attacks: list[str], starts: list[tuple[str, Tensor | None, float]], final: Tensor, end: float
) -> dict[str, dict[str, Any]]:
    """Points attacked / broken and seconds per attack, from the flags at each attack's start.

    An attack that never started (no robust point left) attacked and broke nothing."""
    out: dict[str, dict[str, Any]] = {
        a: {"attacked": 0, "broken": 0, "seconds": 0.0} for a in attacks
    }
    for i, (attack, before, t0) in enumerate(starts):
        after, t1 = (starts[i + 1][1], starts[i + 1][2]) if i + 1 < len(starts) else (final, end)
        entry = out.setdefault(attack, {"attacked": 0, "broken": 0, "seconds": 0.0})
        entry["seconds"] += t1 - t0
        if before is not None and after is not None:
            entry["attacked"] += int(before.sum())
            entry["broken"] += int(before.sum()) - int(after.sum())
    return out


def aggregate_aa(
    chunks: list[dict[str, Any]], n: int
) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """The AA column's breakdown (robust accuracy after each attack, over all ``n`` points), the
    settings it adds (points attacked / broken, clean count, seconds per attack, chunks) and its
    warnings, from the per-chunk ``info`` of :func:`run_autoattack`."""
    infos = [c["aa"] for c in chunks if "aa" in c]
    attacks: list[str] = list(infos[0]["attacks"]) if infos else list(AA_ATTACKS)

    def total(a: str, key: str) -> int:
        return sum(int(i["per_attack"].get(a, {}).get(key, 0)) for i in infos)

    broken = {a: total(a, "broken") for a in attacks}
    attacked = {a: total(a, "attacked") for a in attacks}
    clean = sum(i["clean"] for i in infos)
    warn: list[str] = []
    breakdown: dict[str, float] = {}
    if all(i.get("flags_consistent") for i in infos):
        remaining = clean
        for a in attacks:
            remaining -= broken[a]
            breakdown[a] = remaining / n
    else:
        warn.append(
            "aa: the per-attack breakdown could not be read from pyautoattack's state "
            "consistently with its returned labels; the breakdown is omitted (the AA number "
            "itself is unaffected)"
        )
    seconds = {
        a: round(sum(float(i["per_attack"].get(a, {}).get("seconds", 0.0)) for i in infos), 3)
        for a in attacks
    }
    extra = {
        "points_attacked": attacked,
        "points_broken": broken,
        "clean_correct": clean,
        "seconds_per_attack": seconds,
        "chunks": len(infos),
    }
    return breakdown, extra, warn


def run_aa_column(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    entry: dict[str, Any],
    save: Callable[[], None],
    progress: Any,
    *,
    eps: float,
    norm: str,
    seed: int,
    batch_size: int,
    version: str,
    chunk: int,
    state_dir: Path | None,
) -> Tensor:
    """The AA column's per-point flags, one :func:`run_autoattack` call per chunk of points.

    ``entry`` is the column's record in ardbench's evaluation state: per finished chunk its
    ``info`` (the breakdown, warnings, and the name and sha256 of pyautoattack's state file in
    ``state_dir``). ``save`` writes that state after every chunk. A chunk recorded by an
    interrupted run is read back from pyautoattack's file, and run again when the file is
    missing or altered (its numbers depend only on its own points, so nothing else changes).
    ``progress``: a :class:`~ardbench.eval.progress.Progress`."""
    n = len(x)
    task = progress.add("AA", n, entry["done"])
    flags: dict[int, Tensor] = {}

    def run(start: int, end: int) -> dict[str, Any]:
        where = f"AA [{start}:{end}]"
        t0 = time.perf_counter()
        result = run_autoattack(
            model,
            x[start:end],
            y[start:end],
            eps=eps,
            norm=norm,
            seed=seed,
            batch_size=batch_size,
            version=version,
            state_path=None if state_dir is None else state_dir / f"points-{start}-{end}.json",
            on_start=lambda attack: progress.describe(task, f"{where} {attack}"),
        )
        entry["time_s"] += time.perf_counter() - t0
        flags[start] = result.robust
        info = result.info
        for w in info["warnings"]:
            if f"autoattack: {w}" not in entry["warnings"]:
                entry["warnings"].append(f"autoattack: {w}")
        if info["ball_violation"] > 1e-5:
            entry["warnings"].append(
                f"aa: adversarial points leave the eps-ball or [0,1] by "
                f"{info['ball_violation']:.3g} in points {start}:{end}"
            )
        return {"start": start, "end": end, "aa": info}

    for i, rec in enumerate(entry["chunks"]):
        start, end = rec["start"], rec["end"]
        loaded = None
        if state_dir is not None and "state" in rec.get("aa", {}):
            path = state_dir / rec["aa"]["state"]
            loaded = load_aa_flags(path, rec["aa"].get("state_sha256"), end - start)
        if loaded is not None:
            flags[start] = loaded
        else:
            logger.warning(
                "AA points %d:%d: pyautoattack's state is gone; running again", start, end
            )
            entry["chunks"][i] = run(start, end)
            save()
    while entry["done"] < n:
        start = entry["done"]
        end = min(start + chunk, n)
        entry["chunks"].append(run(start, end))
        entry["done"] = end
        save()
        progress.advance(task, end - start)
    progress.describe(task, "AA")
    return torch.cat([flags[s] for s in sorted(flags)])


def aa_runner(run: ColumnRun) -> Tensor:
    """The registered ``aa`` column's runner: :func:`run_aa_column` over the run's chunks,
    then the breakdown, the settings it adds and AutoAttack's warnings (:func:`aggregate_aa`)."""
    spec = run.spec
    flags = run_aa_column(
        run.model,
        run.x,
        run.y,
        run.entry,
        run.state.save,
        run.bar,
        eps=spec.eps,
        norm=spec.norm,
        seed=spec.seed,
        batch_size=spec.aa_batch_size,
        version=spec.aa_version,
        chunk=run.chunk,
        state_dir=run.state.aa_dir,
    )
    breakdown, extra, warn = aggregate_aa(run.entry["chunks"], len(run.x))
    run.breakdown.update(breakdown)
    run.settings.update(extra)
    run.warnings.extend(warn)
    return flags
