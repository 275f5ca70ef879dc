"""The registry of named protocols: :data:`PROTOCOLS` and the look-ups a run makes.

The built-in protocols are defined in ``named.py`` (which knows nothing of this registry) and
registered on the first look-up; :func:`register_protocol` adds more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry import Registry
from .protocol import Protocol, identity_of

__all__ = [
    "PROTOCOLS",
    "all_protocols",
    "faithful_protocol",
    "get_protocol",
    "protocol_ref",
    "register_protocol",
]

PROTOCOLS: Registry[Protocol] = Registry("protocol", hyphens=True)


def register_protocol(protocol: Protocol) -> Protocol:
    PROTOCOLS.register(protocol.name)(protocol)
    return protocol


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)


def all_protocols() -> list[Protocol]:
    return [PROTOCOLS.get(n) for n in PROTOCOLS.names()]


def _load_named() -> None:
    # late, so that `import ardbench.protocols` stays cheap; named.py imports nothing from here
    from .named import NAMED_PROTOCOLS

    for protocol in NAMED_PROTOCOLS.values():
        register_protocol(protocol)


PROTOCOLS.add_loader(_load_named)


def faithful_protocol(method: str, dataset: str | None = None) -> Protocol | None:
    """The method's own protocol (its official code's) for ``dataset``, else for CIFAR-10,
    else any of its protocols; None for a method without one (a submission)."""
    mine = [p for p in all_protocols() if p.method == method and p.default_for_method]
    for want in (dataset, "cifar10"):
        for p in mine:
            if p.dataset == want:
                return p
    return mine[0] if mine else None


def protocol_ref(config: Mapping[str, Any], data_fingerprint: str | None) -> dict[str, Any]:
    """The ``protocol`` block of a record: the named protocol a run (its resolved config as a
    dict) followed, the identity of the values it used and whether they are the registered
    ones. A protocol defined on a data fingerprint is identified by the run's fingerprint."""
    name = config.get("protocol")
    registered = PROTOCOLS.get(name) if name and name in PROTOCOLS else None
    per_method = registered.per_method if registered else ()
    fingerprint = data_fingerprint if registered and registered.data_fingerprint else None
    identity = identity_of(config, per_method, fingerprint)
    return {
        "name": name,
        "identity": identity,
        "registered_identity": registered.identity() if registered else None,
        "modified": registered is None or identity != registered.identity(),
        "kind": registered.kind if registered else None,
    }
