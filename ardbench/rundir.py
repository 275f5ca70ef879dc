"""A run directory as an object: :class:`Run` (what :func:`ardbench.train` returns).

``Run(path)`` opens any run directory ardbench wrote (finished or not): its resolved config,
its record, the epoch log as rows or as a tidy frame of curves, and its final networks as
eval-mode modules. Nothing is read until asked for, and nothing is cached: a run that is
still training shows its latest state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ArdbenchError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from torch import nn

    from .protocols import RunConfig
    from .results.schema import Record

__all__ = ["Run", "RunNotFoundError", "curves_frame"]

CONFIG = "config.json"  # = ardbench.train.checkpoint.CONFIG (not imported: that loads torch)
RECORD = "record.json"


class RunNotFoundError(ArdbenchError, FileNotFoundError):
    """A path that is not an ardbench run directory."""


class Run:
    """An ardbench run directory (``runs/<run_id>/``).

    Example::

        run = ardbench.Run("runs/rslad-small_cnn-s0-20260101-120000-ab12")
        run.completed, run.metrics          # True, {"clean": 0.52, "pgd20": 0.32}
        run.curves()[["epoch", "loss.kl_adv", "probe.pgd10"]]
        net = run.model()                   # the checkpoint the record describes, eval mode
    """

    def __init__(self, directory: str | Path) -> None:
        path = Path(directory).expanduser()
        if path.is_file() and path.name in (CONFIG, RECORD):
            path = path.parent
        if not (path / CONFIG).is_file():
            raise RunNotFoundError(
                f"{path} is not an ardbench run directory (no {CONFIG})",
                hint="pass a directory that `ardbench run` wrote, e.g. runs/<run_id>",
            )
        self.directory = path

    def __repr__(self) -> str:
        state = "finished" if self.completed else f"{len(self.log())} epoch(s) done"
        return f"Run({str(self.directory)!r}, {state})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and self.directory.resolve() == other.directory.resolve()

    def __hash__(self) -> int:
        return hash(self.directory.resolve())

    @property
    def run_id(self) -> str:
        return self.directory.name

    @property
    def config_dict(self) -> dict[str, Any]:
        """``config.json``: the resolved config as saved."""
        from .io import UnreadableFileError, read_json_bounded

        path = self.directory / CONFIG
        try:
            data: dict[str, Any] = read_json_bounded(path)
        except UnreadableFileError as exc:
            raise ArdbenchError(f"{path} is not readable JSON ({exc.reason})") from None
        return data

    @property
    def config(self) -> RunConfig:
        """The resolved :class:`~ardbench.protocols.RunConfig` the run trains with."""
        from .protocols import RunConfig

        return RunConfig.from_dict(self.config_dict, where=str(self.directory / CONFIG))

    @property
    def completed(self) -> bool:
        """True once ``record.json`` exists (training, evaluation and the record are done)."""
        return (self.directory / RECORD).is_file()

    @property
    def record(self) -> Record | None:
        """The validated, typed record (:class:`ardbench.results.schema.Record`), or None
        while the run is unfinished."""
        if not self.completed:
            return None
        from .results.records import load_record

        return load_record(self.directory / RECORD)

    @property
    def metrics(self) -> dict[str, Any]:
        """The record's accuracies (fractions in [0, 1]) by column; empty while unfinished."""
        record = self.record
        if record is None:
            return {}
        return dict(record.eval.accuracy)

    def log(self) -> list[dict[str, Any]]:
        """The epoch log (``log.jsonl``), one dict per finished epoch: ``epoch``, ``lr``,
        ``losses`` (each loss term), ``diagnostics``, ``probe`` (clean / PGD-10 accuracy on the
        probe points, when the protocol has a probe), ``epoch_time_s``."""
        from .train.checkpoint import read_log

        return read_log(self.directory)

    def curves(self) -> pd.DataFrame:
        """The log as a tidy frame, one row per epoch (see :func:`curves_frame`)."""
        return curves_frame(self.log(), run_id=self.run_id)

    def model(self, checkpoint: str | None = None, *, device: str = "cpu") -> nn.Module:
        """A final network of the run as an eval-mode module on ``device``.

        ``checkpoint``: None (default) for the one the record describes (``model.pt``: the
        protocol's checkpoint rule, the last epoch by default), or a rule's name (``last``,
        ``best-on-holdout``, ``swa``) for one of the others the run saved.
        """
        from .models import load_model

        if not (self.directory / "model.pt").is_file():
            raise ArdbenchError(
                f"run {self.run_id} has no final weights yet (model.pt)",
                hint="let it finish, or continue it with ardbench.resume(run)",
            )
        record = self.record
        chosen = record.checkpoint_kind if record else "last"
        if checkpoint is None or checkpoint == chosen:
            return load_model(f"run:{self.directory}", device=device).module.eval()
        path = self.directory / f"model-{checkpoint}.pt"
        if not path.is_file():
            others = (record.checkpoints if record else None) or {}
            have = [chosen] + sorted(others)
            raise ArdbenchError(
                f"run {self.run_id} has no {checkpoint!r} checkpoint",
                hint=f"it has: {', '.join(have)}",
            )
        from .models import build_arch, extract_state_dict, load_state_dict_strict
        from .models.loading import run_meta

        arch, num_classes = run_meta(self.directory / "model.json")
        import torch

        module = build_arch(arch, num_classes=num_classes)
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_state_dict_strict(module, extract_state_dict(state, where=str(path)), where=str(path))
        return module.to(device).eval()


def curves_frame(rows: list[dict[str, Any]], run_id: str | None = None) -> pd.DataFrame:
    """Epoch-log rows -> one row per epoch with flat columns: ``epoch``, ``lr``,
    ``epoch_time_s``, ``loss.<term>``, ``probe.clean`` / ``probe.pgd10`` (fractions) and
    ``diag.<name>``; ``run_id`` when given."""
    import pandas as pd

    flat = []
    for row in rows:
        out: dict[str, Any] = {"epoch": row["epoch"]}
        if run_id is not None:
            out["run_id"] = run_id
        out["lr"] = row.get("lr")
        out["epoch_time_s"] = row.get("epoch_time_s")
        for k, v in (row.get("losses") or {}).items():
            out[f"loss.{k}"] = v
        for k, v in (row.get("probe") or {}).items():
            if k != "examples" and isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"probe.{k}"] = v
        for k, v in (row.get("diagnostics") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"diag.{k}"] = v
        flat.append(out)
    return pd.DataFrame(flat)
