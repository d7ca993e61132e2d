"""k8s/: every overlay renders with kustomize and validates against the Kubernetes schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import REPO, run

K8S = REPO / "k8s"
# Oldest Kubernetes minor we support; the manifests must also pass the newest schemas.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
OVERLAYS = ("dev", "gpu")
HTTP_SERVICES = {"gateway": 8100, "rag": 8103, "embedder": 8101, "llm": 8102, "ingest-api": 8105}
SERVICES = set(HTTP_SERVICES) | {"ingest-worker"}
GPU_SERVICES = {"embedder", "llm"}

Doc = dict[str, Any]


def render(kubectl: str, path: Path) -> list[Doc]:
    result = run([kubectl, "kustomize", path])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            for c in doc["spec"]["template"]["spec"]["containers"]:
                yield doc["metadata"]["name"], c


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, kubectl: str) -> tuple[str, list[Doc]]:
    return request.param, render(kubectl, K8S / "overlays" / request.param)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_schemas(overlay: tuple[str, list[Doc]], version: str) -> None:
    _, docs = overlay
    failures = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not failures, "\n".join(failures)


def test_the_validator_rejects_a_broken_manifest() -> None:
    """The schema check can fail: a misspelt field and a wrongly typed one."""
    broken = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "two", "selector": {"matchLabels": {"a": "b"}}, "templte": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_each_service_scales_on_its_own(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    deployments, hpas, pdbs = (
        by_kind(docs, k) for k in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget")
    )
    assert set(deployments) == SERVICES
    for name in SERVICES:
        target = hpas[name]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        selector = pdbs[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployments[name]["spec"]["template"]["metadata"]["labels"].items()
    for name in ("gateway", "rag"):
        assert hpas[name]["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    for name in GPU_SERVICES:
        assert hpas[name]["spec"]["metrics"][0]["type"] == "Pods"


def test_queue_metrics_of_the_hpas_are_served_by_prometheus_adapter(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    served = {rule["name"]["as"] for rule in values["rules"]["custom"]}
    for hpa in by_kind(docs, "HorizontalPodAutoscaler").values():
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in served


def test_services_probes_and_resources(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    services = by_kind(docs, "Service")
    assert {n: s["spec"]["ports"][0]["port"] for n, s in services.items()} == HTTP_SERVICES
    for name, container in containers(docs):
        assert {"requests", "limits"} <= container["resources"].keys(), name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        if name in HTTP_SERVICES:
            assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready", name
            assert container["livenessProbe"]["httpGet"]["path"] == "/health/live", name
            assert container["startupProbe"]["httpGet"]["path"] == "/health/live", name


def test_only_the_gateway_is_reachable_from_outside(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    (ingress,) = by_kind(docs, "Ingress").values()
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {"gateway"}
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in by_kind(docs, "Service").values())
    policies = by_kind(docs, "NetworkPolicy").values()
    deny_all = [p for p in policies if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
    assert deny_all, "a default-deny ingress policy"
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if "from" not in rule:  # open to any source: only the gateway may be
                assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "gateway"}


def test_secrets_and_config_that_pods_use_exist(overlay: tuple[str, list[Doc]]) -> None:
    _, docs = overlay
    secrets, configmaps = by_kind(docs, "Secret"), by_kind(docs, "ConfigMap")
    claims = by_kind(docs, "PersistentVolumeClaim")
    for doc in docs:
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod["containers"]:
            for source in c.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    assert by_kind(docs, "Job")["ingest-batch"]["spec"]["suspend"] is True


def test_gpu_overlay_puts_models_on_gpu_nodes(kubectl: str) -> None:
    docs = render(kubectl, K8S / "overlays" / "gpu")
    deployments = by_kind(docs, "Deployment")
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        gpus = pod["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
        if name in GPU_SERVICES:
            assert gpus == 1, name
            assert pod["runtimeClassName"] == "nvidia"
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            assert toleration in pod["tolerations"]
            assert "cuda" in pod["containers"][0]["image"]
        else:
            assert gpus is None and "runtimeClassName" not in pod, name
    llm = deployments["llm"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in llm["env"]}
    assert env["QUARRY_LLM_BACKEND"] == "vllm"


def test_dev_overlay_is_cpu_only(kubectl: str) -> None:
    docs = render(kubectl, K8S / "overlays" / "dev")
    for _, container in containers(docs):
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
        assert container["image"].endswith(":dev")
