"""A run's page: its numbers (every checkpoint it evaluated), verification, teacher check,
per-epoch curves, the resolved config and what it changes against its protocol, provenance
and cost. Every figure is the record's own (accuracies as percentages with two decimals, as
the tables show them); file paths of the machine that ran it are shortened (``html.scrub``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..results.grouping import dataset_label, display_spec
from ..results.schema import COLUMNS, RecordModel
from ..results.tables import COLUMN_TITLES
from .cost import device_name, hardware_number
from .data import RunInfo, method_page, table_page
from .html import DASH, definition_list, esc, fmt_pct, link, page, scrub
from .run_config import config_section, teacher_section
from .run_curves import curves_section
from .titles import table_title

__all__ = ["render_run_page"]


def _results(info: RunInfo) -> str:
    """One row per evaluated checkpoint: the rule's first, then the run's others."""
    m = info.model
    rows = [(m.checkpoint_rule or "last", m.eval, "the protocol's rule: the row in the tables")]
    for kind, extra in sorted((m.checkpoints or {}).items()):
        picked = {k: v for k, v in (extra.model_extra or {}).items() if k != "eval"}
        how = ", ".join(
            f"{k} {v}" for k, v in sorted(picked.items()) if isinstance(v, (int, float, str))
        )
        rows.append((kind, extra.eval, how))
    worst_cols = [
        c for c in COLUMNS if any((ev.worst_class or {}).get(c) is not None for _, ev, _ in rows)
    ]
    head = "".join(f'<th class="num">{esc(COLUMN_TITLES[c])}</th>' for c in COLUMNS)
    head += "".join(f'<th class="num">Worst class {esc(COLUMN_TITLES[c])}</th>' for c in worst_cols)
    body = []
    for kind, ev, how in rows:
        acc = ev.accuracy
        cells = "".join(
            f'<td class="num" data-col="{c}">{fmt_pct(_num(acc.get(c)))}</td>' for c in COLUMNS
        )
        cells += "".join(
            f'<td class="num" data-worst="{c}">{fmt_pct(_num((ev.worst_class or {}).get(c)), 1)}</td>'
            for c in worst_cols
        )
        body.append(
            f'<tr data-checkpoint="{esc(kind)}"><td class="key">{esc(kind)}'
            f'<span class="sub">{esc(how)}</span></td><td class="num">{ev.n_examples}</td>{cells}</tr>'
        )
    later = (m.eval.model_extra or {}).get("later_eval")
    note = ""
    if isinstance(later, dict) and later.get("columns"):
        cols = ", ".join(COLUMN_TITLES.get(c, c) for c in later["columns"] if isinstance(c, str))
        note = f'<p class="lead">{esc(cols)} from a later evaluation of the same checkpoint.</p>'
    if len(rows) == 1:
        note += (
            '<p class="lead">One checkpoint evaluated (rule: '
            f"{esc(rows[0][0])}); no best-on-holdout or other checkpoint to set beside it.</p>"
        )
    return (
        "<h2>Results</h2>"
        '<p class="lead">Accuracy in percent on the first n test points, in order '
        f"({esc(m.track.norm)} ε = {esc(_eps(m))}). — : not evaluated.</p>"
        f'<div class="scroll"><table id="results"><thead><tr><th>Checkpoint</th>'
        f'<th class="num">n</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
        + note
    )


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _eps(m: RecordModel) -> str:
    from ..results.grouping import format_eps

    return format_eps(m.track.eps)


def _weights(m: RecordModel) -> str:
    url = m.checkpoint.url
    if url and url.startswith(("https://", "http://")):
        return (
            link(url, "download the weights") + f" (sha256 <code>{esc(m.checkpoint.sha256)}</code>)"
        )
    where = "not published: the checkpoint stayed on the machine that trained it"
    return f"<code>{esc(m.checkpoint.sha256)}</code> ({where})"


def _provenance(m: RecordModel) -> str:
    cv = m.code_version
    code = (cv.git_sha or "") + (" (dirty: modified files)" if cv.dirty else "")
    items = [
        ("Code version", f"<code>{esc(code or DASH)}</code> · ardbench {esc(cv.version or DASH)}"),
        ("Method source sha256", f"<code>{esc(m.method.source_sha256 or DASH)}</code>"),
        ("Recipe", f"<code>{esc(scrub('recipe', m.recipe or DASH))}</code>"),
        (
            "Dataset",
            f"<code>{esc(dataset_label(m.track.dataset))}</code>"
            + (" (official files)" if m.track.official else " (npz copy)"),
        ),
        (
            "Data fingerprint",
            f"<code>{esc(m.track.data_fingerprint)}</code> (sha256 of the arrays)",
        ),
        (
            "Teacher weights sha256",
            f"<code>{esc(m.teacher.sha256)}</code> ({esc(display_spec(m.teacher.spec))})"
            if m.teacher
            else "no teacher",
        ),
        ("Student", f"<code>{esc(m.student.arch)}</code>"),
        ("Student weights sha256", _weights(m)),
        ("Finished", esc(m.finished_at)),
    ]
    versions = definition_list(
        (k, esc(v if v is not None else "not installed"))
        for k, v in sorted(
            {
                "python": m.versions.python,
                "torch": m.versions.torch,
                **(m.versions.model_extra or {}),
            }.items()
        )
    )
    return "<h2>Provenance</h2>" + definition_list(items) + "<h3>Library versions</h3>" + versions


def _hardware(m: RecordModel) -> str:
    extra: Mapping[str, Any] = m.hardware.model_extra or {}
    images = hardware_number(m, "train_images_per_s")
    memory = hardware_number(m, "peak_memory_mb")
    items = [
        ("Device", esc(device_name(m))),
        (
            "Wall time",
            f'<span id="wall-time">{m.wall_time_s:.1f}</span> s ({m.wall_time_s / 60:.1f} min)',
        ),
        ("Training images/s", f"{images:.1f}" if images is not None else "not recorded"),
        ("Peak memory", f"{memory:.0f} MB" if memory is not None else "not recorded"),
    ]
    for key in ("platform", "torch_threads"):
        if key in extra and isinstance(extra[key], (str, int)):
            items.append((key.replace("_", " ").capitalize(), esc(extra[key])))
    speed = extra.get("speed")
    if isinstance(speed, dict):
        on = [k for k, v in sorted(speed.items()) if v is True]
        items.append(("Speed features on", esc(", ".join(on) or "none")))
    return "<h2>Hardware and cost</h2>" + definition_list(items)


def _verification(info: RunInfo) -> str:
    v = info.verification
    return (
        f'<h2>Verification</h2><p><span class="tag {v.state}" id="verification">{v.state}</span> '
        f"{esc(v.note)}</p>"
    )


def _summary(info: RunInfo) -> str:
    m = info.model
    tables = "<br>".join(link("../" + table_page(t), table_title(t)) for t in info.tables)
    teacher = display_spec(m.teacher.spec) if m.teacher else "none"
    items = [
        ("Method", link("../" + method_page(m.method.name), m.method.name)),
        ("Teacher → student", f"<code>{esc(teacher)}</code> → <code>{esc(m.student.arch)}</code>"),
        ("Seed", f'<span id="seed">{m.seed}</span>'),
        ("Epochs", str(m.epochs)),
        ("Protocol", esc((m.protocol.name if m.protocol else None) or "(not named)")),
        ("In the tables", tables or "none"),
    ]
    return definition_list(items)


def render_run_page(info: RunInfo) -> str:
    m = info.model
    body = [
        f"<h1>Run <code>{esc(m.run_id)}</code></h1>",
        '<p class="lead">One training run: one method, one seed, one protocol. Its figures are '
        "averaged with the other seeds' in the table rows linked below.</p>",
        _summary(info),
        _results(info),
        _verification(info),
        teacher_section(m),
        curves_section(info),
        config_section(m),
        _provenance(m),
        _hardware(m),
    ]
    return page(f"Run {m.run_id}", "\n".join(body), depth=1)
