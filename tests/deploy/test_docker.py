"""docker/Dockerfile: hadolint finds nothing, and every image the deploy files name is built."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.deploy.conftest import REPO, run

DOCKERFILE = REPO / "docker" / "Dockerfile"
RUNTIME_TARGETS = {"gateway", "rag", "ingest", "embedder-cpu", "embedder-cuda", "llm-cpu", "llm-cuda"}


def stages() -> dict[str, str]:
    """Stage name -> the stage it is built FROM."""
    return {m[1]: m[0] for m in re.findall(r"^FROM (\S+) AS (\S+)$", DOCKERFILE.read_text(), re.MULTILINE)}


def test_hadolint_passes(hadolint: str) -> None:
    result = run([hadolint, DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(hadolint: str, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install quarry\n")
    assert run([hadolint, bad]).returncode != 0


def test_runtime_images_are_non_root_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    by_stage = dict(
        zip(
            re.findall(r"^FROM \S+ AS (\S+)$", text, re.MULTILINE),
            re.split(r"^FROM .*$", text, flags=re.MULTILINE)[1:],
            strict=True,
        )
    )
    assert "USER 10001:10001" in by_stage["runtime"]
    assert "HEALTHCHECK" in by_stage["runtime"]
    parents = stages()
    for target in RUNTIME_TARGETS:
        assert parents[target] == "runtime", target
        assert "USER root" not in by_stage[target], target
        assert re.search(r"^CMD \[", by_stage[target], re.MULTILINE), target


def test_every_image_named_in_k8s_has_a_target() -> None:
    images = set()
    for path in (REPO / "k8s").rglob("kustomization.yaml"):
        for image in yaml.safe_load(path.read_text()).get("images", []):
            images.add(image.get("newName", image["name"]))
    assert {i.removeprefix("quarry/") for i in images} <= RUNTIME_TARGETS
