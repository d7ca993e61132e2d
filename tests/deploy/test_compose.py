"""compose/compose.yaml, checked by Compose v2 itself (`docker compose config`), with the
env file that `make compose-env` (compose/gen-env.sh) writes."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ingest.config import IngestSettings
from services.embedder.config import EmbedderSettings
from services.gateway.config import GatewaySettings
from services.llm.config import LLMSettings
from services.rag.config import RagSettings
from tests.deploy.conftest import REPO, run

COMPOSE_FILE = REPO / "compose" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
GEN_ENV = REPO / "compose" / "gen-env.sh"
SECRETS = (
    "QUARRY_REDIS_PASSWORD",
    "QUARRY_MILVUS_ROOT_PASSWORD",
    "QUARRY_MINIO_USER",
    "QUARRY_MINIO_PASSWORD",
    "QUARRY_GRAFANA_USER",
    "QUARRY_GRAFANA_PASSWORD",
)
# Stock credentials of the images compose runs.
STOCK_CREDENTIALS = {"admin", "minioadmin", "Milvus", ""}

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


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text().splitlines() if line and line[0] != "#")
    return {key: value for key, _, value in pairs}


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh env file from the real generator; compose/.env itself is never read here."""
    path = tmp_path_factory.mktemp("compose-env") / ".env"
    result = run(["sh", GEN_ENV, path])
    assert result.returncode == 0, result.stderr
    return path


def compose(
    compose_bin: Path, profile: str, *args: str, env_file: Path | str, file: Path = COMPOSE_FILE
) -> tuple[int, str]:
    # No QUARRY_* from the caller's shell: only the env file decides.
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUARRY_")}
    result = run([compose_bin, "-f", file, "--env-file", env_file, "--profile", profile, *args], env=env)
    return result.returncode, result.stdout + result.stderr


def rendered(compose_bin: Path, profile: str, env_file: Path) -> dict[str, Any]:
    rc, output = compose(compose_bin, profile, "config", "--format", "json", env_file=env_file)
    assert rc == 0, output
    return json.loads(output)  # type: ignore[no-any-return]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_compose_config_is_valid(compose_bin: Path, profile: str, env_file: Path) -> None:
    rc, output = compose(compose_bin, profile, "config", "-q", env_file=env_file)
    assert rc == 0, output


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_runs_the_whole_suite(compose_bin: Path, profile: str, env_file: Path) -> None:
    rc, output = compose(compose_bin, profile, "config", "--services", env_file=env_file)
    assert rc == 0, output
    assert set(output.split()) == PROFILES[profile]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_builds_name_real_targets_and_mounts_exist(compose_bin: Path, profile: str, env_file: Path) -> None:
    config = rendered(compose_bin, profile, env_file)
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
    rc, output = compose(compose_bin, "cpu", "config", "-q", env_file=os.devnull, file=broken)
    assert rc != 0
    assert "restartt" in output or "nowhere" in output


# ------------------------------------------------------------------ deploy defaults


def test_the_env_file_holds_fresh_private_secrets(env_file: Path, tmp_path: Path) -> None:
    values = read_env(env_file)
    assert set(values) == set(SECRETS)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    passwords = [v for k, v in values.items() if k.endswith("_PASSWORD")]
    assert all(re.fullmatch(r"[0-9a-f]{48}", p) for p in passwords), passwords
    assert len(set(passwords)) == len(passwords)
    other = tmp_path / ".env"
    assert run(["sh", GEN_ENV, other]).returncode == 0
    assert set(read_env(other).values()).isdisjoint(passwords)
    # A second run keeps the file: volumes already hold its passwords.
    before = other.read_text()
    assert run(["sh", GEN_ENV, other]).returncode != 0
    assert other.read_text() == before


def test_make_writes_the_env_file_that_git_ignores() -> None:
    dry = run(["make", "-n", "-B", "compose-env"])
    assert dry.returncode == 0, dry.stderr
    assert "compose/gen-env.sh compose/.env" in dry.stdout
    assert run(["git", "check-ignore", "-q", "compose/.env"]).returncode == 0


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_without_a_secret(
    compose_bin: Path, env_file: Path, tmp_path: Path, missing: str
) -> None:
    partial = tmp_path / ".env"
    partial.write_text("".join(f"{k}={v}\n" for k, v in read_env(env_file).items() if k != missing))
    rc, output = compose(compose_bin, "cpu", "config", "-q", env_file=partial)
    assert rc != 0
    assert missing in output and "make compose-env" in output, output


def test_compose_refuses_to_start_with_no_env_file(compose_bin: Path) -> None:
    rc, output = compose(compose_bin, "cpu", "config", "-q", env_file=os.devnull)
    assert rc != 0
    assert "make compose-env" in output, output


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_redis_requires_the_password_every_service_sends(
    compose_bin: Path, profile: str, env_file: Path
) -> None:
    password = read_env(env_file)["QUARRY_REDIS_PASSWORD"]
    services = rendered(compose_bin, profile, env_file)["services"]
    command = services["redis"]["command"]
    assert "--requirepass" in command, command
    assert command[command.index("--requirepass") + 1] == password
    assert services["redis"].get("environment", {}).get("REDISCLI_AUTH") == password  # the healthcheck's
    clients = set()
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if re.fullmatch(r"QUARRY_\w+_REDIS_URL", key):
                url = urlsplit(value)
                assert (url.hostname, url.password) == ("redis", password), f"{name}: {key}"
                clients.add(name)
    assert clients == {"gateway", "rag", "ingest-api", "ingest-worker"}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_no_store_or_console_runs_with_stock_credentials(
    compose_bin: Path, profile: str, env_file: Path
) -> None:
    env = read_env(env_file)
    services = rendered(compose_bin, profile, env_file)["services"]
    minio = services["minio"]["environment"]
    assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (
        env["QUARRY_MINIO_USER"],
        env["QUARRY_MINIO_PASSWORD"],
    )
    milvus = services["milvus"]["environment"]
    assert (milvus["MINIO_ACCESS_KEY_ID"], milvus["MINIO_SECRET_ACCESS_KEY"]) == (
        env["QUARRY_MINIO_USER"],
        env["QUARRY_MINIO_PASSWORD"],
    )
    grafana = services["grafana"]["environment"]
    assert (grafana.get("GF_SECURITY_ADMIN_USER"), grafana.get("GF_SECURITY_ADMIN_PASSWORD")) == (
        env["QUARRY_GRAFANA_USER"],
        env["QUARRY_GRAFANA_PASSWORD"],
    )
    # Milvus standalone checks users once authorization is on; Quarry signs in as root.
    assert milvus.get("COMMON_SECURITY_AUTHORIZATIONENABLED") == "true"
    assert milvus.get("COMMON_SECURITY_DEFAULTROOTPASSWORD") == env["QUARRY_MILVUS_ROOT_PASSWORD"]
    for name in ("rag", "ingest-api", "ingest-worker"):
        environment = services[name]["environment"]
        tokens = {k: v for k, v in environment.items() if re.fullmatch(r"QUARRY_\w+_MILVUS_TOKEN", k)}
        assert tokens and set(tokens.values()) == {f"root:{env['QUARRY_MILVUS_ROOT_PASSWORD']}"}, name
    assert STOCK_CREDENTIALS.isdisjoint(env.values())


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_only_the_gateway_is_published_beyond_loopback(
    compose_bin: Path, profile: str, env_file: Path
) -> None:
    services = rendered(compose_bin, profile, env_file)["services"]
    binds = {
        (name, port["target"]): port.get("host_ip", "")
        for name, service in services.items()
        for port in service.get("ports", [])
    }
    assert binds.pop(("gateway", 8100)) in {"", "0.0.0.0"}
    assert binds and set(binds.values()) == {"127.0.0.1"}, binds


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_prometheus_scrapes_the_port_each_service_serves_metrics_on(
    compose_bin: Path, profile: str, env_file: Path
) -> None:
    """/metrics is on a service's API port unless its QUARRY_*_METRICS_PORT moves it (then only
    there): compose/prometheus/prometheus.yml must follow what each service is set to."""
    config = rendered(compose_bin, profile, env_file)
    scrape = yaml.safe_load((REPO / "compose" / "prometheus" / "prometheus.yml").read_text())
    (quarry,) = [job for job in scrape["scrape_configs"] if job["job_name"] == "quarry"]
    scraped = {name: sd["port"] for sd in quarry["dns_sd_configs"] for name in sd["names"]}
    settings = {
        "gateway": GatewaySettings,
        "rag": RagSettings,
        "embedder": EmbedderSettings,
        "llm": LLMSettings,
        "ingest-api": IngestSettings,
    }
    seen = set()
    for name, service in config["services"].items():
        network = (service.get("networks") or {}).get("default") or {}
        aliases = {name} | set(network.get("aliases") or [])
        (dns_name,) = (aliases & set(settings)) or {None}
        if dns_name is None:
            continue
        cls = settings[dns_name]
        prefix = str(cls.model_config["env_prefix"])
        env = service.get("environment") or {}
        default_port = cls.model_fields["port"].default
        served = int(env.get(f"{prefix}METRICS_PORT") or env.get(f"{prefix}PORT") or default_port)
        assert scraped[dns_name] == served, name
        seen.add(dns_name)
    assert seen == set(scraped)
