"""compose/compose.yaml, checked by Compose v2 itself (`docker compose config`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, run

COMPOSE_FILE = REPO / "compose" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"

COMMON = {
    "gateway",
    "rag",
    "ingest-api",
    "ingest-worker",
    "redis",
    "etcd",
    "minio",
    "milvus",
    "prometheus",
    "grafana",
}
PROFILES = {
    "cpu": COMMON | {"embedder-cpu", "llm-cpu"},
    "gpu": COMMON | {"embedder-gpu", "llm-gpu", "dcgm-exporter"},
}


def compose(compose_bin: Path, profile: str, *args: str, file: Path = COMPOSE_FILE) -> tuple[int, str]:
    result = run([compose_bin, "-f", file, "--profile", profile, *args])
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_compose_config_is_valid(compose_bin: Path, profile: str) -> None:
    rc, output = compose(compose_bin, profile, "config", "-q")
    assert rc == 0, output


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_runs_the_whole_suite(compose_bin: Path, profile: str) -> None:
    rc, output = compose(compose_bin, profile, "config", "--services")
    assert rc == 0, output
    assert set(output.split()) == PROFILES[profile]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_builds_name_real_targets_and_mounts_exist(compose_bin: Path, profile: str) -> None:
    rc, output = compose(compose_bin, profile, "config", "--format", "json")
    assert rc == 0, output
    config = json.loads(output)
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE.read_text(), re.MULTILINE))
    for name, service in config["services"].items():
        if "build" in service:
            assert service["build"]["target"] in targets, name
            assert Path(service["build"]["context"]) == REPO, name
        for volume in service.get("volumes", []):
            # Config files mounted from this repo must exist; the LLM folder is the operator's.
            if volume["type"] == "bind" and volume["target"] != "/models/llm":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"
    published = {n for n, s in config["services"].items() if s.get("ports")}
    assert published == {"gateway", "prometheus", "grafana"}


def test_compose_rejects_a_broken_file(compose_bin: Path, tmp_path: Path) -> None:
    """The check can fail: an unknown key and a dangling dependency are errors."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        "services:\n  gateway:\n    image: quarry/gateway\n    restartt: always\n    depends_on: [nowhere]\n"
    )
    rc, output = compose(compose_bin, "cpu", "config", "-q", file=broken)
    assert rc != 0
    assert "restartt" in output or "nowhere" in output
