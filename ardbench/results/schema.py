"""The run record's schema (version 2) as pydantic models, its validation and its upgrades.

A record is everything needed to place a run in a leaderboard table and to say what produced
it (DESIGN.md, principles 3-4). :class:`Record` is the record as pydantic models (strict:
no coercion; ``true`` is not ``1``, ``"2"`` is not ``2``); :mod:`ardbench.results.validate`
judges a dict with them and names the first bad field, and
:func:`ardbench.results.records.load_record` returns the typed :class:`Record`. Consumers read
attributes (``record.eval.column("aa")``, ``record.teacher_sha``); the open blocks (``config``,
``eval.settings``) stay dicts. A record dumps (:meth:`Record.to_dict`) to exactly the JSON it
was read from: numbers keep their written form, absent fields stay absent.

Schema version 2 (fields; "?" = may be null or absent; an *id* is
``[A-Za-z0-9][A-Za-z0-9._-]*``, at most 200 characters, because ids become file names):

==================  ========================================================================
schema_version      2
run_id              an id (the run directory's name)
started_at?         ISO-8601 with a timezone (UTC when ardbench writes it)
finished_at         ISO-8601 with a timezone
track               ``dataset`` (spec as run), ``norm`` (Linf | L2), ``eps`` (> 0, the
                    evaluation radius), ``data_fingerprint`` (sha256 of the arrays),
                    ``num_classes``, ``official`` (loaded from the dataset's own source, not an
                    ``npz`` copy), ``description?``, ``test_fingerprint`` (may be absent)
teacher?            ``spec``, ``resolved?``, ``sha256`` (of the weights), ``arch?`` (an id),
                    ``check?`` (the teacher check before training: ``augmented``,
                    ``unaugmented``, ``test`` accuracies in percent on ``n_train`` /
                    ``n_test`` points, ``augmentation``, ``chance``, ``warnings``); null
                    without a teacher
student             ``spec``, ``arch`` (an id)
method              ``name`` (lowercase snake_case), ``config`` (resolved method_config),
                    ``config_hash``, ``unofficial``, ``teacher_in_attack``,
                    ``source_sha256?`` (sha256 of the method's source files: a built-in's or an
                    entry point's module file, a contrib method's whole folder; see
                    :func:`ardbench.results.provenance.method_source_sha256`)
recipe?             preset or recipe file that produced the config (provenance)
config              the resolved run config (``RunConfig.to_dict()``)
seed, epochs        the training seed and number of epochs (equal to those in ``config``)
wall_time_s         training time, seconds
code_version        ``git_sha?`` (40 hex), ``dirty?``, ``version?`` (at least a sha or a
                    version). ``dirty`` is true when a tracked file of the checkout was modified
                    or a file of the method's own source is not tracked by git
hardware            ``device`` and whatever else describes the machine
versions            library versions: ``python``, ``torch`` and more (strings or null)
eval                the evaluator's block: ``n_examples``, ``accuracy`` ({column: fraction in
                    [0, 1] or null, or an object of those}), ``eps?``/``norm?`` (equal to the
                    track's), ``settings?``, ``worst_class?``, ``aa_unreliable?``,
                    ``warnings?`` ...
checkpoint          ``path`` and/or ``url``, ``sha256``
paper?              published figures the recipe sets beside ours: ``source?``, ``tag?``
                    (checked | relayed | abstract | rerun | issue), ``rule?`` (the paper's
                    checkpoint rule), ``note?`` and, per column (``clean``, ``aa``, ...), a
                    percentage in [0, 100] or null
protocol?           the named protocol the run followed: ``name``, ``identity`` (12 hex: the
                    hash of the protocol values the run used), ``registered_identity`` (the
                    named protocol's), ``modified`` (they differ), ``kind``
checkpoint_rule?    ``last`` | ``best-on-holdout`` | ``swa``: which checkpoint ``eval`` and
                    ``checkpoint`` describe
checkpoints?        the run's other checkpoints, by rule (``last`` beside a best-on-holdout or
                    SWA checkpoint): ``path``, ``sha256``, ``eval`` and what selected it
extra_teachers?     the other frozen networks a method named in its config (MTARD's clean
                    teacher, IAD-II's natural teacher): ``spec``, ``sha256``, ``arch``,
                    ``check?`` (as the teacher's)
upgraded_from?      set by ``upgrade_record`` when it upgraded an older record in memory
==================  ========================================================================

A field that "may be absent" is never null either. Unknown top-level fields are errors (a typo would otherwise silently drop information);
nested objects accept extra keys so that the evaluator and the hardware block can grow
without a schema bump. Every value anywhere must be plain JSON: strings as keys, no NaN or
infinity (a record that validates can always be written). ``method.source_sha256``, ``protocol``,
``checkpoint_rule`` and ``checkpoints`` were added within version 2 as optional fields:
records without them load unchanged. Older versions
are upgraded in memory by :func:`ardbench.results.validate.upgrade_record`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StrictStr

from ..protocols.columns import COLUMNS
from ..protocols.paper import PaperFigures
from .fields import (
    ID_PATTERN,
    NORMS,
    AnyInt,
    Bool,
    Classes,
    ConfigHash,
    Count0,
    Count1,
    Eps,
    Fractions,
    Hex40,
    Hex64,
    Id,
    Norm,
    NotNull,
    Percent,
    RunId,
    Seconds,
    Snake,
    Text,
    Timestamp,
    describe,
    expect,
    pattern,
)

SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
# COLUMNS: the registered evaluation columns, a live view of ardbench.protocols.columns

__all__ = [
    "COLUMNS",
    "ID_PATTERN",
    "NORMS",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "UNION_TAGS",
    "Paper",
    "PaperModel",
    "Record",
    "RecordModel",
    "describe",
]


# ---------------------------------------------------------------------------------- models


class _Open(BaseModel):
    """A nested object: known fields are checked, other keys may hold any JSON value."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)

    def extra(self, key: str) -> Any:
        """An open key's value (None when absent): the blocks grow without a schema bump."""
        return (self.model_extra or {}).get(key)


def _number(value: Any) -> float | None:
    """A measured value as a float, or None (not run, or a breakdown object)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class Track(_Open):
    dataset: Text
    norm: Norm
    eps: Eps
    data_fingerprint: Hex64
    num_classes: Classes
    official: Bool
    description: Text | None = None
    test_fingerprint: Annotated[Hex64 | None, NotNull] = None


class TeacherCheckBlock(_Open):
    """The teacher sanity check before training (``ardbench.train.teacher_check``)."""

    augmentation: Text
    n_train: Count0
    augmented: Percent
    unaugmented: Percent
    n_test: Count0
    test: Percent | None
    chance: Percent
    warnings: list[StrictStr]


class Teacher(_Open):
    spec: Text
    sha256: Hex64
    resolved: Text | None = None
    arch: Id | None = None
    check: TeacherCheckBlock | None = None


class Student(_Open):
    spec: Text
    arch: Id


class Method(_Open):
    name: Snake
    config: dict[str, Any]
    config_hash: ConfigHash
    unofficial: Bool
    teacher_in_attack: Bool
    source_sha256: Hex64 | None = None


class CodeVersion(_Open):
    git_sha: Hex40 | None = None
    dirty: Bool | None = None
    version: Text | None = None

    @property
    def label(self) -> str:
        """``1a2b3c4+dirty`` (the git sha's first 7 digits), else ``v<version>``."""
        if self.git_sha:
            return self.git_sha[:7] + ("+dirty" if self.dirty else "")
        return f"v{self.version}"


class Hardware(_Open):
    device: Text


class Versions(_Open):
    __pydantic_extra__: dict[str, Text | None]  # every other library: a version or null
    python: Text
    torch: Text


class Eval(_Open):
    n_examples: Count1
    accuracy: dict[str, Fractions]
    eps: Annotated[Eps | None, NotNull] = None
    norm: Annotated[Norm | None, NotNull] = None
    settings: Annotated[dict[str, Any] | None, NotNull] = None
    worst_class: Annotated[dict[str, Fractions] | None, NotNull] = None
    aa_unreliable: Annotated[Bool | None, NotNull] = None
    warnings: Annotated[list[Text] | None, NotNull] = None

    def column(self, name: str) -> float | None:
        """A column's accuracy (fraction), or None when it was not evaluated."""
        return _number(self.accuracy.get(name))

    def worst(self, name: str) -> float | None:
        """A column's worst-class accuracy (fraction), or None."""
        return _number((self.worst_class or {}).get(name))

    def setting(self, name: str) -> dict[str, Any]:
        """The settings of a column's attack (``{}`` when none were recorded)."""
        value = (self.settings or {}).get(name)
        return value if isinstance(value, dict) else {}

    @property
    def split(self) -> str:
        """ "test" (the default) or "holdout" (held-out training examples)."""
        return "test" if self.extra("split") in (None, "test") else "holdout"

    @property
    def is_aa_unreliable(self) -> bool:
        return bool(self.aa_unreliable)

    @property
    def later_columns(self) -> tuple[str, ...]:
        """The columns merged in from a later evaluation (``leaderboard --attach``)."""
        later = self.extra("later_eval")
        columns = later.get("columns") if isinstance(later, dict) else None
        return tuple(columns or ())

    @property
    def failed_compliance(self) -> tuple[str, ...]:
        """The compliance checks that ran and failed (sorted)."""
        checks = self.extra("compliance")
        if not isinstance(checks, dict):
            return ()
        return tuple(
            sorted(k for k, v in checks.items() if isinstance(v, dict) and v.get("passed") is False)
        )


class Checkpoint(_Open):
    sha256: Hex64
    path: Text | None = None
    url: Text | None = None


Paper = PaperFigures  # one model for published figures: ardbench.protocols.paper


class ProtocolRef(_Open):
    """The named protocol a run followed and whether its values were the registered ones."""

    name: Text | None
    identity: Annotated[StrictStr, pattern(r"[0-9a-f]{12}"), expect("12 hex digits")]
    registered_identity: (
        Annotated[StrictStr, pattern(r"[0-9a-f]{12}"), expect("12 hex digits")] | None
    ) = None
    modified: Annotated[Bool | None, NotNull] = None
    kind: Text | None = None


class ExtraCheckpoint(Checkpoint):
    """Another checkpoint of the same run (``last`` beside a best-on-holdout or SWA one)."""

    eval: Eval


class Record(BaseModel):
    """A current-version record, typed. Fields declared ``= None`` may be absent; ``Optional``
    ones may be null. :meth:`to_dict` gives back exactly what was validated (absent fields
    stay absent, numbers as written), so a loaded record dumps to the bytes it was read from.
    Build one from a dict with :func:`ardbench.results.records.as_record` (upgrades older
    versions and checks the cross-field rules too)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    schema_version: AnyInt
    run_id: RunId
    finished_at: Timestamp
    track: Track
    teacher: Teacher | None
    student: Student
    method: Method
    config: dict[str, Any]
    seed: Count0
    epochs: Count1
    wall_time_s: Seconds
    code_version: CodeVersion
    hardware: Hardware
    versions: Versions
    eval: Eval
    checkpoint: Checkpoint
    started_at: Timestamp | None = None
    recipe: Text | None = None
    paper: Paper | None = None
    upgraded_from: Annotated[Count1 | None, NotNull] = None
    protocol: ProtocolRef | None = None
    checkpoint_rule: Text | None = None
    checkpoints: Annotated[dict[Id, ExtraCheckpoint] | None, NotNull] = None
    extra_teachers: Annotated[dict[Id, Teacher] | None, NotNull] = None

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON document it is (what :func:`record_bytes` writes)."""
        # numbers are kept as written (an int in a float field): the serializer would warn
        return self.model_dump(exclude_unset=True, warnings=False)

    @property
    def teacher_sha(self) -> str:
        """The teacher's weights' sha256, "" for a run without a teacher."""
        return self.teacher.sha256 if self.teacher is not None else ""

    @property
    def protocol_name(self) -> str | None:
        """The named protocol the run followed (the ``protocol`` block's, else the config's)."""
        if self.protocol is not None and self.protocol.name:
            return self.protocol.name
        name = self.config.get("protocol")
        return name if isinstance(name, str) else None

    @property
    def checkpoint_kind(self) -> str:
        """Which checkpoint ``eval`` describes: the protocol's rule (``last`` by default)."""
        return self.checkpoint_rule or "last"

    # Read-only dict access for code written when records were dicts (``record["eval"]``):
    # the value is the JSON form. New code reads attributes.
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def checkpoint_evals(self) -> list[tuple[str, Eval]]:
        """(checkpoint kind, eval block): the rule's checkpoint first, then the run's others
        (the last epoch beside a best-on-holdout or SWA checkpoint), by kind."""
        out = [(self.checkpoint_kind, self.eval)]
        out += [(kind, extra.eval) for kind, extra in sorted((self.checkpoints or {}).items())]
        return out


RecordModel = Record  # the name before records were returned typed


class PaperModel(BaseModel):
    """The ``paper`` block alone (a recipe's, checked before a long run starts)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    paper: Paper | None


UNION_TAGS = frozenset({"<object>", "<fraction>"})
"""Branch names pydantic puts in error locations inside :data:`Fractions` (not record keys)."""
