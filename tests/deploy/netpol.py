"""Just enough of Kubernetes NetworkPolicy semantics to ask, of rendered manifests, whether
one endpoint may open a connection to another on a port.

A connection is allowed when the source's namespace lets it out (egress) and the
destination's namespace lets it in (ingress). Only the policies given are known: a
namespace with no policy selecting a pod leaves that pod open, as Kubernetes does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """A pod (``namespace`` set) or an address outside the cluster (``namespace`` None)."""

    name: str
    namespace: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str = "10.0.0.1"
    # Container port names, for policies that name ports.
    named_ports: Mapping[str, int] = field(default_factory=dict)


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A label selector: matchLabels and matchExpressions; an empty selector selects all."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def _peer_matches(peer: Mapping[str, Any], other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.namespace is None:  # selectors name pods only
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], _namespace_labels(other.namespace)):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), other.labels)


def _port_matches(ports: list[Mapping[str, Any]] | None, port: int, protocol: str, target: Endpoint) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            wanted = target.named_ports.get(wanted)
        if wanted is not None and wanted <= port <= entry.get("endPort", wanted):
            return True
    return False


def _types(policy: Doc) -> set[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if "egress" in spec else set())


def _allowed(
    policies: Iterable[Doc], direction: str, subject: Endpoint, other: Endpoint, port: int, protocol: str
) -> bool:
    """Whether policies in ``subject``'s namespace let ``other`` in (Ingress) or out (Egress)."""
    section, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    target = subject if direction == "Ingress" else other
    isolating = [
        p
        for p in policies
        if p["metadata"].get("namespace") == subject.namespace
        and direction in _types(p)
        and selects(p["spec"]["podSelector"], subject.labels)
    ]
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get(section) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(peer, other, subject.namespace or "") for peer in peers):
                continue
            if _port_matches(rule.get("ports"), port, protocol, target):
                return True
    return False


def allows(policies: list[Doc], source: Endpoint, target: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """Whether ``source`` may connect to ``target`` on ``port``."""
    out = source.namespace is None or _allowed(policies, "Egress", source, target, port, protocol)
    return out and (target.namespace is None or _allowed(policies, "Ingress", target, source, port, protocol))
