"""k8s/: what each overlay exposes. The Ingress routes only the gateway's API; NetworkPolicies
let in only the callers each pod has, Prometheus only on metrics ports, and let out only DNS,
the stores and each pod's upstream services. Checked on the rendered manifests with a small
NetworkPolicy evaluator (tests/deploy/netpol.py)."""

from __future__ import annotations

from itertools import product

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from services.common.health import health_router
from tests.deploy.netpol import Doc, Endpoint, allows
from tests.deploy.test_k8s import K8S, OVERLAYS, by_kind, render

NAME = "app.kubernetes.io/name"

# Who else lives in a cluster running Quarry (docs/deploy.md names these namespaces).
OUTSIDE_SOURCES = (
    Endpoint("ingress-controller", "ingress-nginx", {NAME: "ingress-nginx"}),
    Endpoint("prometheus", "monitoring", {NAME: "prometheus"}),
    Endpoint("grafana", "monitoring", {NAME: "grafana"}),
    Endpoint("other-tenant", "default", {"app": "other"}),
    Endpoint("internet", None, ip="203.0.113.10"),
)
OUTSIDE_TARGETS = (
    Endpoint("dns", "kube-system", {"k8s-app": "kube-dns"}),
    Endpoint("redis", "redis", {NAME: "redis"}),
    Endpoint("milvus", "milvus", {NAME: "milvus"}),
    Endpoint("other-tenant", "default", {"app": "other"}),
    Endpoint("kube-apiserver", None, ip="10.96.0.1"),
    Endpoint("cloud-metadata", None, ip="169.254.169.254"),
    Endpoint("internet", None, ip="203.0.113.10"),
)
PROBES = [
    (53, "UDP"),
    (53, "TCP"),
    (80, "TCP"),
    (443, "TCP"),
    (6379, "TCP"),
    (19530, "TCP"),
    (9090, "TCP"),
] + [(p, "TCP") for p in range(8100, 8106)]

INGEST = ("ingest-api", "ingest-worker", "ingest-batch")
PODS = ("gateway", "rag", "embedder", "llm", *INGEST)
# Each service serves /metrics on a port of its own (QUARRY_*_METRICS_PORT), not on its API port.
METRICS = {"gateway": 9090, "rag": 9090, "embedder": 9090, "llm": 9090, "ingest-api": 9090}

Edge = tuple[str, str, int, str]
EXPECTED_IN: set[Edge] = {("ingress-controller", "gateway", 8100, "TCP")} | {
    ("prometheus", pod, port, "TCP") for pod, port in METRICS.items()
}
EXPECTED_BETWEEN: set[Edge] = {
    ("gateway", "rag", 8103, "TCP"),
    ("gateway", "ingest-api", 8105, "TCP"),
    ("rag", "embedder", 8101, "TCP"),
    ("rag", "llm", 8102, "TCP"),
} | {(pod, "embedder", 8101, "TCP") for pod in INGEST}
EXPECTED_OUT: set[Edge] = (
    {(pod, "dns", 53, proto) for pod in PODS for proto in ("UDP", "TCP")}
    | {(pod, "redis", 6379, "TCP") for pod in ("gateway", "rag", *INGEST)}
    | {(pod, "milvus", 19530, "TCP") for pod in ("rag", *INGEST)}
)


def quarry_pods(docs: list[Doc]) -> dict[str, Endpoint]:
    pods = {}
    for doc in docs:
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        template = doc["spec"]["template"]
        labels = template["metadata"]["labels"]
        named = {
            p["name"]: p["containerPort"]
            for c in template["spec"]["containers"]
            for p in c.get("ports", [])
            if "name" in p
        }
        pods[labels[NAME]] = Endpoint(labels[NAME], doc["metadata"]["namespace"], labels, "10.1.0.1", named)
    return pods


def edges(policies: list[Doc], sources: list[Endpoint], targets: list[Endpoint]) -> set[Edge]:
    return {
        (s.name, t.name, port, proto)
        for s, t, (port, proto) in product(sources, targets, PROBES)
        if s is not t and allows(policies, s, t, port, proto)
    }


def diff(actual: set[Edge], expected: set[Edge]) -> str:
    return (
        f"allowed but not needed: {sorted(actual - expected)}\nneeded but denied: {sorted(expected - actual)}"
    )


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, kubectl: str) -> list[Doc]:
    return render(kubectl, K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def policies(rendered: list[Doc]) -> list[Doc]:
    return list(by_kind(rendered, "NetworkPolicy").values())


@pytest.fixture(scope="module")
def pods(rendered: list[Doc]) -> dict[str, Endpoint]:
    found = quarry_pods(rendered)
    assert set(found) == set(PODS)
    return found


# ------------------------------------------------------------------ ingress


def routed(paths: list[Doc], request_path: str) -> bool:
    """Whether an Ingress path list routes a request path (Prefix matches whole segments)."""
    for entry in paths:
        path, kind = entry["path"], entry["pathType"]
        if kind == "Exact" and request_path == path:
            return True
        if kind == "Prefix":
            prefix = path.rstrip("/")
            if prefix == "" or request_path == prefix or request_path.startswith(prefix + "/"):
                return True
    return False


def test_the_ingress_routes_only_the_gateway_api(rendered: list[Doc]) -> None:
    (ingress,) = by_kind(rendered, "Ingress").values()
    spec = ingress["spec"]
    assert "defaultBackend" not in spec
    # Annotations that rewrite, regex-match or inject nginx config would defeat the paths.
    risky = ("use-regex", "rewrite-target", "snippet", "default-backend", "app-root")
    assert not [a for a in ingress["metadata"].get("annotations", {}) if any(r in a for r in risky)]
    paths = [p for rule in spec["rules"] for p in rule["http"]["paths"]]
    # ImplementationSpecific may mean a regex to ingress-nginx.
    assert {p["pathType"] for p in paths} <= {"Prefix", "Exact"}
    for public in ("/v1/query", "/v1/search", "/v1/keys", "/v1/collections/docs/documents", "/v1/jobs/j1"):
        assert routed(paths, public), public
    for internal in (
        "/",
        "/metrics",
        "/docs",
        "/openapi.json",
        "/redoc",
        "/health/ready",
        "/health/live",
        "/v1x",
    ):
        assert not routed(paths, internal), internal


# ------------------------------------------------------------------ network policies


def test_policies_deny_by_default_both_ways(policies: list[Doc]) -> None:
    defaults = {
        t
        for p in policies
        if p["spec"]["podSelector"] == {}
        for t in p["spec"]["policyTypes"]
        if not p["spec"].get(t.lower())
    }
    assert defaults == {"Ingress", "Egress"}


def test_from_outside_only_the_ingress_controller_and_prometheus_get_in(
    policies: list[Doc], pods: dict[str, Endpoint]
) -> None:
    actual = edges(policies, list(OUTSIDE_SOURCES), list(pods.values()))
    assert actual == EXPECTED_IN, diff(actual, EXPECTED_IN)


def test_prometheus_reaches_each_pod_on_its_scrape_port_only(
    rendered: list[Doc], policies: list[Doc]
) -> None:
    prometheus = OUTSIDE_SOURCES[1]
    for doc in rendered:
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        (pod,) = quarry_pods([doc]).values()
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        scraped = {int(annotations["prometheus.io/port"])} if "prometheus.io/port" in annotations else set()
        reachable = {port for port, proto in PROBES if allows(policies, prometheus, pod, port, proto)}
        assert reachable == scraped, pod.name


def test_pods_reach_each_other_only_where_they_call(policies: list[Doc], pods: dict[str, Endpoint]) -> None:
    actual = edges(policies, list(pods.values()), list(pods.values()))
    assert actual == EXPECTED_BETWEEN, diff(actual, EXPECTED_BETWEEN)


def test_pods_reach_out_only_to_dns_and_their_stores(policies: list[Doc], pods: dict[str, Endpoint]) -> None:
    actual = edges(policies, list(pods.values()), list(OUTSIDE_TARGETS))
    assert actual == EXPECTED_OUT, diff(actual, EXPECTED_OUT)


def test_the_evaluator_follows_networkpolicy_semantics() -> None:
    """The checks can fail: no policy leaves pods open; peers and ports narrow a rule."""
    rag = Endpoint("rag", "quarry", {NAME: "rag"}, named_ports={"http": 8103})
    gateway = Endpoint("gateway", "quarry", {NAME: "gateway"})
    prometheus, grafana, internet = OUTSIDE_SOURCES[1], OUTSIDE_SOURCES[2], OUTSIDE_SOURCES[4]
    assert allows([], internet, rag, 8103)

    def policy(spec: Doc) -> Doc:
        return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "quarry"}, "spec": spec}

    scrape = policy(
        {
            "podSelector": {"matchExpressions": [{"key": NAME, "operator": "In", "values": ["rag"]}]},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                            },
                            "podSelector": {"matchLabels": {NAME: "prometheus"}},
                        }
                    ],
                    "ports": [{"port": "http"}],
                }
            ],
        }
    )
    assert allows([scrape], prometheus, rag, 8103)
    assert not allows([scrape], prometheus, rag, 8105)
    assert not allows([scrape], grafana, rag, 8103)
    assert not allows([scrape], gateway, rag, 8103)
    assert allows([scrape], internet, gateway, 8100)  # the policy does not select the gateway
    deny_out = policy({"podSelector": {}, "policyTypes": ["Egress"]})
    web = policy(
        {
            "podSelector": {},
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]}],
        }
    )
    assert not allows([deny_out], rag, internet, 443)
    assert allows([deny_out, web], rag, internet, 443)
    assert not allows([deny_out, web], rag, Endpoint("metadata", None, ip="169.254.169.254"), 80)


# ------------------------------------------------------------------ metrics apart from the API


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_are_served_apart_from_the_api(kubectl: str, overlay: str) -> None:
    """The scraped port is not an API port, and the pod's settings really serve /metrics there
    (which also turns it off on the API port: tests/integration/test_metrics_port.py)."""
    docs = render(kubectl, K8S / "overlays" / overlay)
    services = by_kind(docs, "Service")
    scraped = 0
    for name, deployment in by_kind(docs, "Deployment").items():
        template = deployment["spec"]["template"]
        annotations = template["metadata"].get("annotations", {})
        if "prometheus.io/port" not in annotations:
            continue
        scraped += 1
        port = int(annotations["prometheus.io/port"])
        api_ports = {p["port"] for p in services[name]["spec"]["ports"]}
        assert port not in api_ports, name
        (container,) = template["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert [v for k, v in env.items() if k.endswith("_METRICS_PORT")] == [str(port)], name
        assert {"name": "metrics", "containerPort": port} in container["ports"], name
    assert scraped == len(METRICS)


async def test_readiness_errors_name_no_internal_host() -> None:
    # A real client's error for an unreachable store, as a readiness check raises it.
    client = aioredis.Redis.from_url("redis://localhost:1/0", socket_connect_timeout=1)

    async def redis_ready() -> None:
        await client.ping()

    app = FastAPI()
    app.include_router(health_router({"redis": redis_ready}))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            response = await http.get("/health/ready")
    finally:
        await client.aclose()
    assert response.status_code == 503
    assert "localhost" not in response.text, response.text
