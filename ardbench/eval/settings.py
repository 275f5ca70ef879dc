""":class:`EvalSpec`: an evaluation's settings, typed and validated once.

The API (``ardbench.evaluate``), the CLI (``ardbench eval``), :func:`~ardbench.eval.spec.evaluate_spec`
and :func:`~ardbench.eval.core.evaluate_model` all build or take one ``EvalSpec``; nothing
downstream checks a setting again. Free of torch (the CLI validates before loading it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..protocols.column import SettingsContext
from ..protocols.columns import parse_columns
from ..protocols.eps import Eps, parse_number
from ..protocols.sections import check_radius

__all__ = ["AA_VERSIONS", "DEFAULT_AA_BATCH_SIZE", "DEFAULT_ATTACKS", "EvalSpec", "SettingError"]

DEFAULT_AA_BATCH_SIZE = 256
DEFAULT_ATTACKS = ("clean", "fgsm", "pgd20", "cw", "aa")  # ardbench eval: every built-in column
AA_VERSIONS = ("standard", "plus", "rand")


class SettingError(ConfigError):
    """A bad evaluation setting: ``setting`` names the field, ``detail`` what is wrong, so a
    caller can say it in its own words (the CLI: ``--n-examples must be >= 1, got 0``)."""

    def __init__(self, setting: str, detail: str, *, hint: str | None = None) -> None:
        super().__init__(f"{setting} {detail}", hint=hint)
        self.setting = setting
        self.detail = detail


def _int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingError(name, f"must be an integer >= {low}, got {value!r}")
    if value < low:
        raise SettingError(name, f"must be >= {low}, got {value}")


@dataclass(frozen=True)
class EvalSpec:
    """What an evaluation runs (see :func:`~ardbench.eval.core.evaluate_model` for each
    setting's meaning). ``attacks`` is kept in registry order with clean first; ``eps`` as a
    float (``"8/255"`` is accepted and parsed exactly)."""

    attacks: tuple[str, ...] = ("clean", "pgd20")
    eps: float = 8 / 255
    norm: str = "Linf"
    seed: int = 0
    batch_size: int | str = "auto"
    aa_batch_size: int = DEFAULT_AA_BATCH_SIZE
    aa_version: str = "standard"
    chunk_size: int | None = None
    n_examples: int | None = None
    compliant: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", parse_columns(self.attacks))
        try:  # on the exact value as given ("1e-400" is not 0)
            check_radius("eps", Eps(self.eps))
        except ConfigError as exc:
            raise SettingError("eps", exc.message.removeprefix("eps "), hint=exc.hint) from None
        object.__setattr__(self, "eps", parse_number(self.eps))
        if self.norm not in ("Linf", "L2"):
            raise SettingError("norm", f"must be Linf or L2, got {self.norm!r}")
        if self.aa_version not in AA_VERSIONS:
            raise SettingError(
                "aa_version", f"must be standard, plus or rand, got {self.aa_version!r}"
            )
        _int("seed", self.seed, 0)
        bs = int(self.batch_size) if str(self.batch_size).isdigit() else self.batch_size
        object.__setattr__(self, "batch_size", bs)
        if bs != "auto" and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise SettingError("batch_size", f"must be a positive integer or 'auto', got {bs!r}")
        _int("aa_batch_size", self.aa_batch_size, 1)
        for name in ("chunk_size", "n_examples"):
            if getattr(self, name) is not None:
                _int(name, getattr(self, name), 1)

    @classmethod
    def create(
        cls,
        *,
        attacks: str | Sequence[str] = ("clean", "pgd20"),
        eps: float | str = 8 / 255,
        **settings: Any,
    ) -> EvalSpec:
        """An ``EvalSpec`` from loose values (``attacks="clean,aa"``, ``eps="8/255"``); an
        unknown setting is an error naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(
                f"unknown evaluation setting {unknown[0]!r}",
                hint=f"known: {', '.join(sorted(known))}",
            )
        # both parsed by __post_init__ (eps checked on its exact value first)
        return cls(attacks=attacks, eps=eps, **settings)  # type: ignore[arg-type]

    def settings_context(self, chunk_size: int | None) -> SettingsContext:
        """What the columns' recorded settings see (``chunk_size`` as resolved for the run)."""
        return SettingsContext(
            eps=self.eps,
            norm=self.norm,
            seed=self.seed,
            aa_batch_size=self.aa_batch_size,
            chunk_size=chunk_size,
            aa_version=self.aa_version,
        )
