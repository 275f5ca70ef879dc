"""The Python API: train, evaluate and collect results from Python alone.

The command line is a layer over these functions (``ardbench run`` calls :func:`train`,
``ardbench eval`` the evaluator that :func:`evaluate` calls). Everything is reachable from
the top-level package::

    import ardbench

    run = ardbench.train(method="rslad", preset="demo", seed=0, epochs=2)
    run.metrics                       # {"clean": 0.52, "pgd20": 0.31} (fractions)
    model = run.model()               # eval-mode nn.Module, the checkpoint the record describes
    res = ardbench.evaluate(model, dataset="digits", eps="8/255", attacks="clean,fgsm,pgd20")
    res.accuracy["pgd20"]
    df = ardbench.results("runs")     # pandas, one row per finished run

Settings resolve exactly as on the command line (library defaults < the method's faithful
protocol < ``preset``/``recipe`` < the named arguments < ``sets`` < ``**overrides``), and are
validated before anything is written.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ._api_checks import CONFIG_ARGS, EVALUATE_ARGS, RESULTS_ARGS, TRAIN_ARGS, check_arguments
from .protocols.eps_check import check_eps_plausible
from .rundir import Run, RunNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from rich.console import Console
    from torch import nn

    from .eval.result import EvalResult
    from .eval.settings import EvalSpec
    from .protocols import RunConfig
    from .train.teacher_check import TeacherCheck

F = TypeVar("F", bound=Callable[..., Any])
_FORCE = "--force (Python: force=True)"  # how to run an implausible radius anyway

__all__ = [
    "Run",
    "RunNotFoundError",
    "check_teacher",
    "config",
    "evaluate",
    "resume",
    "results",
    "train",
    "train_config",
    "verify",
]


def config(
    method: str | None = None,
    *,
    protocol: str | None = None,
    recipe: str | None = None,
    preset: str | None = None,
    teacher: str | None = None,
    student: str | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    download: bool = False,
    sets: Iterable[str] = (),
    force: bool = False,
    _default_method: str | None = None,
    **overrides: Any,
) -> RunConfig:
    """The resolved, validated run config; nothing is trained or written.

    Args:
        method: a method name (``ardbench list methods``); may come from the recipe instead.
        protocol: a named protocol (``ardbench list protocols``); default: the recipe's, else
            the method's own faithful protocol, else ``standard-<dataset>``.
        recipe: a recipe name (``baselines/<method>/``, ``baselines/common/``, a built-in
            preset) or a YAML path. ``preset``: a built-in preset only (e.g. ``"demo"``).
        teacher, student: model specs (``ARCH``, ``ARCH:PATH``, ``PATH.pt2``,
            ``robustbench:ID``, ``run:RUN_ID``, ``demo``).
        sets: ``--set`` strings, ``"train.lr=0.05"``.
        force: accept an implausible L∞ radius (above 32/255, e.g. ``0.5`` meant as 0.5/255),
            which is otherwise refused before anything runs.
        **overrides: any config key as ``--set`` takes it, as a Python value: a bare key that
            exists in one place (``beta=6``, ``train_subset=256``, ``lr=0.05``) or a section
            with a mapping (``train={"lr": 0.05, "milestones": [5]}``, ``attack={"steps": 3}``,
            ``method_config={...}``).

    Example::

        >>> cfg = ardbench.config(method="trades", preset="demo", epochs=2, beta=3)
        >>> cfg.train.epochs, cfg.method_config["beta"]
        (2, 3.0)
    """
    check_arguments(CONFIG_ARGS, locals())
    from .recipes import resolve_config

    cli: dict[str, Any] = {}
    for key, value in (
        ("dataset", dataset),
        ("data_dir", data_dir),
        ("teacher", teacher),
        ("student", student),
        ("device", device),
    ):
        if value is not None:
            cli[key] = value
    if download:
        cli["download"] = True
    train_layer = {k: v for k, v in (("epochs", epochs), ("seed", seed)) if v is not None}
    if train_layer:
        cli["train"] = train_layer
    cfg = resolve_config(
        method,
        protocol=protocol,
        preset=preset,
        recipe=recipe,
        cli=cli,
        sets=list(sets),
        overrides=overrides,
        default_method=_default_method,
    )
    check_eps_plausible(cfg.attack.norm, cfg.attack.eps, force=force, flag=_FORCE)
    return cfg


def _takes_config_parameters(func: F) -> F:
    """``func(method, *, own keywords, **settings)`` passes ``settings`` to :func:`config`;
    its signature (``help()``, IDEs) shows config's parameters in their place, stated once."""
    own = inspect.signature(func)
    shared = [
        p for name, p in inspect.signature(config).parameters.items() if name != "_default_method"
    ]
    keyword = [p for p in own.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    func.__signature__ = own.replace(  # type: ignore[attr-defined]
        parameters=[*shared[:-1], *keyword, shared[-1]]
    )
    return func


@_takes_config_parameters
def train(
    method: str | None = None,
    *,
    runs: str | Path = "runs",
    progress: bool = True,
    threads: int | None = None,
    tensorboard: bool = False,
    console: Console | None = None,
    **settings: Any,
) -> Run:
    """Train a student, evaluate it, write ``<runs>/<run_id>/`` with its record; return the
    :class:`Run`.

    The settings are :func:`config`'s (``protocol``, ``recipe``, ``preset``, ``teacher``,
    ``student``, ``seed``, ``epochs``, ``dataset``, ``data_dir``, ``device``, ``download``,
    ``sets`` and any config key), plus: ``runs`` (the directory of run directories),
    ``progress`` (an epoch line per epoch, a live bar on a terminal), ``threads`` (torch's CPU
    threads; default ``OMP_NUM_THREADS`` if set, else the physical cores), ``tensorboard``
    (also log each epoch to ``<run>/tensorboard/``; needs the ``tensorboard`` package).

    Example (the demo's teacher is trained once and cached; about a minute on a laptop)::

        >>> run = ardbench.train(method="rslad", preset="demo", seed=0, epochs=2,
        ...                      train_subset=256)
        >>> run.completed, sorted(run.metrics)
        (True, ['clean', 'pgd20'])
        >>> run.log()[-1]["probe"]["pgd10"]     # the per-epoch probe, for curves
        0.21
    """
    check_arguments(TRAIN_ARGS, locals())
    return train_config(
        config(method, **settings),
        runs=runs,
        progress=progress,
        threads=threads,
        tensorboard=tensorboard,
        console=console,
    )


def train_config(
    cfg: RunConfig,
    *,
    runs: str | Path = "runs",
    progress: bool = True,
    threads: int | None = None,
    tensorboard: bool = False,
    console: Console | None = None,
) -> Run:
    """:func:`train` for a config resolved already (:func:`config`; ``Run.config``)."""
    from .threads import set_threads
    from .train.trainer import train as run_trainer

    hook = _tensorboard_hook(tensorboard)
    set_threads(threads)
    try:
        result = run_trainer(cfg, runs_dir=runs, progress=progress, console=console, on_epoch=hook)
    finally:
        if hook is not None:
            hook.close()
    return Run(result.run_dir)


def _tensorboard_hook(enabled: bool) -> Any:
    if not enabled:
        return None
    from .tensorboard import TensorBoardLogger

    return TensorBoardLogger()


def resume(
    run: Run | str | Path,
    *,
    progress: bool = True,
    threads: int | None = None,
    tensorboard: bool = False,
    console: Console | None = None,
) -> Run:
    """Continue an interrupted run from its last checkpoint, with its saved config (to the
    same weights as an uninterrupted run).

    Example::

        >>> run = ardbench.resume("runs/rslad-small_cnn-s0-20260101-120000-ab12")
    """
    from .threads import set_threads
    from .train.trainer import resume as resume_dir

    directory = run.directory if isinstance(run, Run) else Path(run)
    hook = _tensorboard_hook(tensorboard)
    set_threads(threads)
    try:
        result = resume_dir(directory, progress=progress, console=console, on_epoch=hook)
    finally:
        if hook is not None:
            hook.close()
    return Run(result.run_dir)


def evaluate(
    model: nn.Module | Run | str,
    *,
    dataset: str,
    eps: float | str = "8/255",
    attacks: str | Sequence[str] = ("clean", "pgd20"),
    n_examples: int | None = None,
    norm: str = "Linf",
    seed: int = 0,
    device: str = "auto",
    batch_size: int | str = "auto",
    aa_batch_size: int = 256,
    data_dir: str | None = None,
    download: bool = False,
    runs: str | Path = "runs",
    progress: bool = False,
    threads: int | None = None,
    force: bool = False,
) -> EvalResult:
    """Evaluate a model on the first ``n_examples`` test points of ``dataset`` (all by
    default) with the benchmark's evaluator; return its
    :class:`~ardbench.eval.result.EvalResult` (``accuracy`` by column as fractions,
    ``per_class``, ``settings``, ``to_dict()``).

    Args:
        model: an ``nn.Module`` (images in [0, 1], NCHW, logits out), a :class:`Run`, or a
            model spec (``ARCH:PATH``, ``PATH.pt2``, ``robustbench:ID``, ``run:RUN_ID``).
        attacks: registered columns (built-ins: ``clean, fgsm, pgd20, cw, aa``; a
            comma-separated string or a sequence); default clean and PGD-20. ``aa`` is
            AutoAttack standard (slow). The settings become one validated
            :class:`~ardbench.eval.settings.EvalSpec`.
        eps: the L-inf (or L2, ``norm="L2"``) radius, ``"8/255"`` or a float.
        seed: seeds the random starts (drawn per point: the batch size changes only speed).
        force: accept an implausible L∞ radius (above 32/255), otherwise refused.

    Example::

        >>> res = ardbench.evaluate(run.model(), dataset="digits", eps="8/255",
        ...                         attacks="clean,fgsm,pgd20")
        >>> res.accuracy
        {'clean': 0.52, 'fgsm': 0.36, 'pgd20': 0.31}
    """
    check_arguments(EVALUATE_ARGS, locals())
    from .eval.settings import EvalSpec
    from .threads import set_threads

    spec = EvalSpec.create(
        attacks=attacks,
        eps=eps,
        norm=norm,
        seed=seed,
        batch_size=batch_size,
        aa_batch_size=aa_batch_size,
        n_examples=n_examples,
    )
    check_eps_plausible(norm, eps, force=force, key="eps", flag=_FORCE)
    set_threads(threads)
    if isinstance(model, (Run, str)):
        from .eval import evaluate_spec

        name = f"run:{model.directory}" if isinstance(model, Run) else model
        return evaluate_spec(
            name,
            dataset,
            spec,
            data_dir=data_dir,
            download=download,
            device=device,
            runs_dir=runs,
            progress=progress,
        )
    return _evaluate_module(model, dataset, spec, device, data_dir, download, progress)


def _evaluate_module(
    model: nn.Module,
    dataset: str,
    spec: EvalSpec,
    device: str,
    data_dir: str | None,
    download: bool,
    progress: bool,
) -> EvalResult:
    """:func:`evaluate` of a module in memory (no model spec to record)."""
    import warnings

    from .data import load_dataset
    from .device import resolve_device
    from .eval import ComplianceWarning, evaluate_model
    from .eval.spec import data_block

    dev = resolve_device(device)
    ds = load_dataset(dataset, data_dir=data_dir, download=download)
    x, y = ds.test_subset(spec.n_examples, device=dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComplianceWarning)  # recorded in result.warnings
        result = evaluate_model(
            model, x, y, spec, device=dev, num_classes=ds.num_classes, progress=progress
        )
    result.data = data_block(dataset, ds, len(x))
    return result


def check_teacher(
    teacher: str,
    *,
    method: str | None = None,
    protocol: str | None = None,
    recipe: str | None = None,
    n: int = 2048,
    runs: str | Path = "runs",
    **settings: Any,
) -> TeacherCheck:
    """The teacher check a run does before training, alone: ``teacher``'s accuracy on up to
    ``n`` training inputs as a run of ``protocol``/``recipe`` would feed them to the students
    (its augmentation and seed), on the same inputs unaugmented, and on the first ``n`` test
    points. ``settings`` are :func:`config`'s (``dataset``, ``sets``, ...). The method only
    selects a faithful protocol when none is named (default: ``kd``, whose protocol is the
    standard one).

    Example::

        >>> chk = ardbench.check_teacher("demo", preset="demo")
        >>> chk.augmented, chk.unaugmented, chk.warnings
    """
    from .errors import ConfigError
    from .train.setup import teacher_check_alone

    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    cfg = config(
        method,
        protocol=protocol,
        recipe=recipe,
        teacher=teacher,
        _default_method="kd",
        **settings,
    )
    return teacher_check_alone(cfg, runs_dir=Path(runs), n=n)


def results(*paths: str | Path | Run) -> pd.DataFrame:
    """Every finished run's record under ``paths`` as a pandas DataFrame, one tidy row per run.

    ``paths``: run directories, record files, or directories searched recursively (``runs/``,
    a sweep directory, ``leaderboard/runs``); default ``runs``. A run found twice counts
    once. Later evaluations filed beside a record (``ardbench leaderboard --attach``, e.g. the
    AA column) are merged in and named in ``later_columns``.

    Columns (:data:`ardbench.results.tidy.TIDY_COLUMNS`): ``run_id, method, recipe, protocol,
    teacher, student, seed, clean, fgsm, pgd20, cw, aa`` (accuracies as fractions, NaN where
    not evaluated), ``epochs, dataset, norm, eps, n_examples, split, later_columns,
    aa_unreliable``, the full specs, ``row_identity`` (the leaderboard's row: runs with the
    same value are the seeds one table row averages), ``config_hash`` and ``recipe_hash``
    (the older grouping, kept for compatibility: it does not split ``train.deterministic``),
    ``wall_time_s, finished_at, code, run_dir``.

    Example::

        >>> df = ardbench.results("runs")
        >>> df.groupby("row_identity")[["clean", "pgd20"]].agg(["mean", "std"])
    """
    check_arguments(RESULTS_ARGS, {"paths": paths})
    from .results.leaderboard import collect_records
    from .results.records import RecordError, record_bytes
    from .results.tidy import tidy_frame

    records: dict[str, Any] = {}
    for path in paths or ("runs",):
        root = path.directory if isinstance(path, Run) else Path(path)
        for record in collect_records(root):
            rid = record.run_id
            if rid in records and record_bytes(records[rid]) != record_bytes(record):
                raise RecordError(
                    "run_id", f"{rid!r} names two different records under {paths}", source=root
                )
            records[rid] = record
    return tidy_frame(records.values())


def verify(
    path: str | Path | Run,
    *,
    columns: Sequence[str] | None = None,
    n: int | None = None,
    weights: str | Path | None = None,
    download: bool = False,
    retrain: bool = False,
    runs: str | Path = "runs",
    threads: int | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Check a record (a record file, a run directory or a :class:`Run`): its weights' sha256,
    then a re-evaluation under its own protocol compared column by column, or with
    ``retrain`` a new training run judged in the row's seed std (written to ``runs``). Returns
    the result (``state``: verified | partial | failed, ``note``, ``columns``), also written
    beside the record as ``<run_id>.verify.json`` unless ``write`` is false. See
    :mod:`ardbench.results.verify`."""
    from .results.records import RECORD_FILENAME, load_record
    from .results.retrain import retrain_record
    from .results.verify import verify_path
    from .threads import set_threads

    set_threads(threads)
    target = path.directory if isinstance(path, Run) else Path(path)
    if retrain:
        record_path = target / RECORD_FILENAME if target.is_dir() else target
        return retrain_record(
            load_record(record_path), record_path, runs_dir=runs, threads=threads, write=write
        )
    _, result = verify_path(
        target, columns=columns, n=n, weights=weights, download=download, write=write
    )
    return result
