"""A run page's config and teacher sections: the resolved config, flattened to
``section.key = value`` with what the run changed against its named protocol marked, and the
teacher check the trainer ran before training."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from ..results.grouping import display_spec
from ..results.schema import RecordModel, TeacherCheckBlock
from .html import definition_list, esc, scrub

__all__ = ["config_section", "flat_config", "teacher_section"]


def flat_config(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, display value) in key order; machine paths shortened."""
    for key in sorted(config):
        value = config[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flat_config(value, name + ".")
        else:
            yield name, scrub(name, value)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _changes(m: RecordModel) -> tuple[str, list[tuple[str, Any, Any]]]:
    """(what the run followed, its changes against the named protocol)."""
    from ..errors import ArdbenchError
    from ..protocols import PROTOCOLS, protocol_changes

    name = m.protocol.name if m.protocol else None
    if not name or name not in PROTOCOLS:
        return "no registered protocol named in the record", []
    try:
        changes = protocol_changes(m.config, PROTOCOLS.get(name), m.track.data_fingerprint)
    except (ArdbenchError, TypeError, ValueError, KeyError):  # a config this build cannot read
        return f"protocol {name} (this version cannot compare the config with it)", []
    return f"protocol {name}", changes


def config_section(m: RecordModel) -> str:
    followed, changes = _changes(m)
    changed_keys = {k for k, _, _ in changes}
    if changes:
        items = "".join(
            f"<li><code>{esc(k)}</code>: "
            + (
                "the data (see the dataset below)"
                if k == "data"
                else f"{esc(_show(scrub(k, mine)))} (registered: {esc(_show(scrub(k, theirs)))})"
            )
            + "</li>"
            for k, mine, theirs in changes
        )
        what = f'<p>Changed against {esc(followed)}:</p><ul id="changes">{items}</ul>'
    elif followed.startswith("protocol ") and "cannot" not in followed:
        what = f'<p id="changes">Follows {esc(followed)} exactly: no value changed.</p>'
    else:
        what = f'<p id="changes">{esc(followed[0].upper() + followed[1:])}.</p>'
    rows = []
    for key, value in flat_config(m.config):
        section_key = key.replace("method_config.", "method.", 1)
        cls = ' class="changed"' if key in changed_keys or section_key in changed_keys else ""
        rows.append(f"<tr{cls}><th>{esc(key)}</th><td><code>{esc(_show(value))}</code></td></tr>")
    method = "".join(
        f"<tr><th>{esc(k)}</th><td><code>{esc(_show(scrub(k, v)))}</code></td></tr>"
        for k, v in sorted(m.method.config.items())
    )
    return (
        "<h2>Configuration</h2>"
        + what
        + '<div class="cols"><div><h3>Resolved run config</h3>'
        + f'<table class="kv"><tbody>{"".join(rows)}</tbody></table></div>'
        + f"<div><h3>Method config ({esc(m.method.name)}, hash <code>{esc(m.method.config_hash)}</code>)</h3>"
        + f'<table class="kv"><tbody>{method or "<tr><td>(no settings)</td></tr>"}</tbody></table></div></div>'
    )


def _check(check: TeacherCheckBlock) -> str:
    test = (
        f"{check.test:.2f} % on {check.n_test} test points"
        if check.test is not None
        else "not measured"
    )
    items = [
        (
            "Training inputs as the students see them",
            f"{check.augmented:.2f} % on {check.n_train} ({esc(check.augmentation)})",
        ),
        ("Unaugmented training inputs", f"{check.unaugmented:.2f} %"),
        ("Test points", test),
        ("Chance", f"{check.chance:.2f} %"),
        ("Warnings", esc("; ".join(check.warnings)) if check.warnings else "none"),
    ]
    return definition_list(items)


def teacher_section(m: RecordModel) -> str:
    head = "<h2>Teacher check</h2>"
    if m.teacher is None:
        return head + "<p>No teacher: this method trains without one (a reference row).</p>"
    out = (
        head
        + f"<p>Teacher <code>{esc(display_spec(m.teacher.spec))}</code>: its accuracy before training.</p>"
    )
    out += (
        _check(m.teacher.check)
        if m.teacher.check
        else "<p>Not recorded (the run predates the check).</p>"
    )
    for name, extra in sorted((m.extra_teachers or {}).items()):
        out += f"<h3>Extra teacher {esc(name)}: <code>{esc(display_spec(extra.spec))}</code></h3>"
        out += _check(extra.check) if extra.check else "<p>Not recorded.</p>"
    return out
