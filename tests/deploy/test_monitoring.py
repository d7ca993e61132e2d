"""Alert rules and the Grafana dashboard: valid PromQL (promtool) naming metrics that the
running services really export (a live /metrics scrape of the suite)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ingest.config import IngestSettings
from ingest.runner import ingest_path
from services.cli.suite import Suite
from tests.conftest import KeyFactory
from tests.deploy.conftest import REPO, run

MONITORING = REPO / "k8s" / "monitoring"
RULES = MONITORING / "quarry-alerts.rules.yml"
DASHBOARD = MONITORING / "quarry-dashboard.json"
ADAPTER = MONITORING / "prometheus-adapter-values.yaml"
PROMETHEUS_CONFIG = REPO / "compose" / "prometheus" / "prometheus.yml"
SCRAPED = ("gateway", "rag", "embedder", "llm")

# Series that come from somewhere other than Quarry's services, and where from.
EXTERNAL = {
    "up": "Prometheus itself, per scrape target",
    "DCGM_FI_DEV_GPU_UTIL": "NVIDIA dcgm-exporter (GPU profile / GPU Operator)",
    "DCGM_FI_DEV_FB_USED": "NVIDIA dcgm-exporter (GPU profile / GPU Operator)",
}

_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: what is left once strings, label matchers,
    ranges, grouping clauses, function calls and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        word, call = match.groups()
        if not call and word.lower() not in _PROMQL_WORDS:
            names.add(word)
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels, "the dashboard has panels"
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(exprs) >= len(panels)
    # Grafana's variable is a duration at query time; promtool needs a literal.
    return [e.replace("$__rate_interval", "5m") for e in exprs]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def adapter_exprs() -> list[str]:
    return [r["seriesQuery"] for r in yaml.safe_load(ADAPTER.read_text())["rules"]["custom"]]


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (service, le) (rate(quarry_http_request_duration_seconds_bucket"
        '{route!~"/health/.*", x="a{b}"}[5m]))) / on(service) group_left sum(up{job="quarry"}) > 0.5'
    )
    assert metric_names(expr) == {"quarry_http_request_duration_seconds_bucket", "up"}


def test_alert_rules_pass_promtool(promtool: str) -> None:
    result = run([promtool, "check", "rules", RULES])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_broken_rules(promtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.rules.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(a[5m])\n")
    assert run([promtool, "check", "rules", broken]).returncode != 0


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each dashboard query, as a recording rule, goes through promtool's parser."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"quarry:dashboard_query_{i}", "expr": e}
                    for i, e in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run([promtool, "check", "rules", path])
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_passes_promtool(promtool: str, tmp_path: Path) -> None:
    # The container paths of the rule files do not exist here: point them at the real file.
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run([promtool, "check", "config", path])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_provisionable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    datasources = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    provisioned = yaml.safe_load(
        (REPO / "compose/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )["datasources"]
    assert datasources == {d["uid"] for d in provisioned}


# Series names each metric type exports (prometheus_client's text format).
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def scrape(suite: Suite) -> dict[str, set[str]]:
    """Series names on each service's /metrics: those with samples, and those a declared
    family exports once its first labelled child is observed (e.g. degraded answers)."""
    exported: dict[str, set[str]] = {}
    for service in SCRAPED:
        response = httpx.get(f"{suite.url(service)}/metrics", timeout=10)
        assert response.status_code == 200, service
        names = exported.setdefault(service, set())
        for family in text_string_to_metric_families(response.text):
            names.update(s.name for s in family.samples)
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return exported


async def test_every_queried_metric_is_exported_by_the_running_services(
    suite: Suite,
    examples_dir: Path,
    collection_name: str,
    ingest_settings: IngestSettings,
    make_key: KeyFactory,
) -> None:
    # Traffic first, so labelled series have samples: a cache miss, then a hit. The answers
    # themselves are the e2e tests' business; a slow or failed query (a 504 on a loaded
    # machine) still leaves every family declared on /metrics, which is what counts here.
    report = await ingest_path(examples_dir, collection_name, ingest_settings)
    assert report.failed == 0
    key = await make_key()
    async with httpx.AsyncClient(base_url=suite.url("gateway"), timeout=150) as client:
        for _ in range(2):
            response = await client.post(
                "/v1/query",
                json={"question": "How do I rotate an API key?", "collection": collection_name},
                headers={"authorization": f"Bearer {key}"},
            )
            assert response.status_code in {200, 503, 504}, response.text

    exported = scrape(suite)
    everywhere = set().union(*exported.values())
    used: dict[str, set[str]] = {}
    for source, exprs in (
        ("dashboard", dashboard_exprs()),
        ("rules", rule_exprs()),
        ("adapter", adapter_exprs()),
    ):
        for expr in exprs:
            for name in metric_names(expr):
                used.setdefault(name, set()).add(source)
    assert used, "no metric names found"
    unknown = set(used) - everywhere - set(EXTERNAL)
    missing = {name: sorted(used[name]) for name in unknown}
    assert not missing, f"queried but not exported by {', '.join(SCRAPED)}: {missing}"
    # Every service exports the common request metrics the per-service panels rely on.
    for service, names in exported.items():
        assert "quarry_http_requests_total" in names, service


def test_healthcheck_script_reports_health(suite: Suite) -> None:
    script = REPO / "docker" / "healthcheck.py"

    def probe(url: str) -> int:
        env = {"QUARRY_HEALTHCHECK_URL": url, "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, script], env=env, capture_output=True, timeout=30).returncode

    assert probe(f"{suite.url('gateway')}/health/live") == 0
    assert probe(f"{suite.url('gateway')}/no-such-route") == 1
    assert probe("http://127.0.0.1:9/health/live") == 1
