"""``quarry variants report|promote|weights``: compare answer variants, and move traffic.

The report reads the answer records and feedback rag keeps in Redis; ``promote`` and
``weights`` rewrite the variant file, which every rag replica rereads by itself.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from rich.console import Console
from rich.table import Table

from services.cli.unreachable import fail_unreachable
from services.cli.variant_stats import percentile, two_proportion_test, wilson_interval
from services.rag.answer_records import INDEX_KEY, feedback_key, record_key
from services.rag.variants.spec import VariantError, read_file, write_weights

variants_app = typer.Typer(
    help="Compare answer variants and move traffic between them.", no_args_is_help=True
)
_console = Console()
_BATCH = 500

RecordsRedis = Annotated[
    str,
    typer.Option(
        "--redis-url",
        envvar=["QUARRY_RAG_RECORDS_REDIS_URL", "QUARRY_RAG_REDIS_URL", "QUARRY_REDIS_URL"],
        help="Redis holding rag's answer records (QUARRY_RAG_RECORDS_REDIS_URL, else QUARRY_RAG_REDIS_URL).",
    ),
]
VariantsFile = Annotated[
    Path,
    typer.Option("--file", envvar="QUARRY_RAG_VARIANTS_FILE", help="The variant file (rag's variants_file)."),
]


@dataclass
class Tally:
    variant: str
    answers: int = 0
    abstained: int = 0
    up: int = 0
    down: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    cost: float = 0.0

    @property
    def rated(self) -> int:
        return self.up + self.down

    def add(self, record: dict[str, Any], feedback: dict[str, Any] | None) -> None:
        self.answers += 1
        self.abstained += record.get("answered_by") == "none"
        total = record.get("timings_ms", {}).get("total")
        if isinstance(total, int | float):
            self.latencies_ms.append(float(total))
        self.cost += float(record.get("cost") or 0.0)
        if feedback is not None:
            self.up += feedback.get("rating") == "up"
            self.down += feedback.get("rating") == "down"


def tally(records: list[dict[str, Any]], feedback: dict[str, dict[str, Any]]) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for record in records:
        variant = str(record.get("variant", "?"))
        tallies.setdefault(variant, Tally(variant)).add(record, feedback.get(record["answer_id"]))
    return tallies


def report_rows(tallies: dict[str, Tally], control: str | None, alpha: float = 0.05) -> list[dict[str, Any]]:
    """One row per variant (the control first), each compared with the control's thumbs-up rate
    by a pooled two-proportion z-test (two-sided)."""
    if not tallies:
        return []
    if control is None or control not in tallies:
        control = max(tallies.values(), key=lambda t: t.answers).variant
    base = tallies[control]
    total = sum(t.answers for t in tallies.values())
    rows = []
    for t in sorted(tallies.values(), key=lambda t: (t.variant != control, t.variant)):
        low, high = wilson_interval(t.up, t.rated)
        comparison = None if t is base else two_proportion_test(t.up, t.rated, base.up, base.rated)
        rows.append(
            {
                "variant": t.variant,
                "control": t is base,
                "answers": t.answers,
                "traffic_share": t.answers / total,
                "rated": t.rated,
                "up_rate": t.up / t.rated if t.rated else None,
                "up_rate_ci95": [low, high] if t.rated else None,
                "abstention_rate": t.abstained / t.answers if t.answers else None,
                "latency_p50_ms": percentile(t.latencies_ms, 50),
                "latency_p99_ms": percentile(t.latencies_ms, 99),
                "cost_per_answer": t.cost / t.answers if t.answers else None,
                "vs_control": None
                if comparison is None
                else {
                    "difference": comparison.difference,
                    "z": comparison.z,
                    "p_value": comparison.p_value,
                    "significant": comparison.significant(alpha),
                },
            }
        )
    return rows


def read_records(client: redis.Redis, since: float) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    found: list[bytes] = client.zrangebyscore(INDEX_KEY, since, "+inf")  # type: ignore[assignment]
    ids = [i.decode() for i in found]
    records: list[dict[str, Any]] = []
    feedback: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        for raw in client.mget([record_key(i) for i in chunk]):
            if raw:
                records.append(json.loads(raw))
        for answer_id, raw in zip(chunk, client.mget([feedback_key(i) for i in chunk]), strict=True):
            if raw:
                feedback[answer_id] = json.loads(raw)
    return records, feedback


def _control_from(path: Path | None) -> str | None:
    """The control's id in the file: its version taking traffic, else its highest."""
    if path is None or not path.exists():
        return None
    file = read_file(path, max_variants=64)
    control = file.current(file.control_name)
    return None if control is None else control.id


def _fmt(value: float | None, pattern: str = "{:.1%}") -> str:
    return "-" if value is None else pattern.format(value)


@variants_app.command("report")
def report(
    redis_url: RecordsRedis = "redis://127.0.0.1:6379/0",
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", envvar="QUARRY_RAG_VARIANTS_FILE", help="The variant file: names the control."
        ),
    ] = None,
    control: Annotated[
        str | None, typer.Option(help="The control, name@version (default: the file's).")
    ] = None,
    since_hours: Annotated[float, typer.Option(help="Answers of the last N hours.")] = 24 * 7,
    alpha: Annotated[float, typer.Option(help="Significance level of the test.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Per variant: traffic, thumbs-up rate (95% Wilson interval), abstention, latency, cost, and
    whether its thumbs-up rate differs from the control's (pooled two-proportion z-test)."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=10)
    try:
        records, feedback = read_records(client, time.time() - since_hours * 3600)
    except redis.ConnectionError as exc:
        fail_unreachable("Redis", redis_url, str(exc))
    except redis.RedisError as exc:
        _console.print(f"[red]Redis at {redis_url} failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        client.close()
    rows = report_rows(tally(records, feedback), control or _control_from(file), alpha)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Answer variants, last {since_hours:g} h ({len(records)} answers)")
    for column in (
        "variant",
        "answers",
        "share",
        "rated",
        "up rate (95% CI)",
        "abstained",
        "p50 ms",
        "p99 ms",
        "cost/answer",
        "vs control",
    ):
        table.add_column(column)
    for row in rows:
        ci = row["up_rate_ci95"]
        up = "-" if row["up_rate"] is None else f"{row['up_rate']:.1%} ({ci[0]:.1%}–{ci[1]:.1%})"
        versus = row["vs_control"]
        if row["control"]:
            verdict = "control"
        elif versus is None:
            verdict = "no ratings to compare"
        else:
            word = "significant" if versus["significant"] else "not significant"
            verdict = f"{versus['difference']:+.1%}, p={versus['p_value']:.3g}, {word}"
        table.add_row(
            row["variant"],
            str(row["answers"]),
            _fmt(row["traffic_share"]),
            str(row["rated"]),
            up,
            _fmt(row["abstention_rate"]),
            _fmt(row["latency_p50_ms"], "{:.0f}"),
            _fmt(row["latency_p99_ms"], "{:.0f}"),
            _fmt(row["cost_per_answer"], "{:.5f}"),
            verdict,
        )
    _console.print(table)
    _console.print(f"Test: pooled two-proportion z-test on thumbs-up rates, two-sided, alpha {alpha:g}.")


def _rewrite(file: Path, weights: dict[str, float]) -> None:
    try:
        write_weights(file, weights)
    except (OSError, VariantError, KeyError) as exc:
        _console.print(f"[red]Cannot update {file}:[/red] {exc}")
        raise typer.Exit(1) from exc
    _console.print(f"{file}: " + ", ".join(f"{k}={v:g}" for k, v in weights.items()))


@variants_app.command("promote")
def promote(
    name: str, file: VariantsFile = Path(os.environ.get("QUARRY_RAG_VARIANTS_FILE", "variants.yaml"))
) -> None:
    """Moves all traffic to NAME (its highest version); rag applies it within seconds."""
    names = {v.name for v in read_file(file, max_variants=64).variants}
    if name not in names:
        _console.print(f"[red]No variant {name!r} in {file}[/red] ({', '.join(sorted(names))})")
        raise typer.Exit(1)
    _rewrite(file, {n: (100.0 if n == name else 0.0) for n in sorted(names)})


@variants_app.command("weights")
def weights(
    shares: Annotated[list[str], typer.Argument(help="NAME=WEIGHT pairs, e.g. control=90 candidate=10.")],
    file: VariantsFile = Path(os.environ.get("QUARRY_RAG_VARIANTS_FILE", "variants.yaml")),
) -> None:
    """Sets traffic weights of the named variants (their highest versions)."""
    parsed: dict[str, float] = {}
    for pair in shares:
        name, _, weight = pair.partition("=")
        try:
            parsed[name] = float(weight)
        except ValueError as exc:
            raise typer.BadParameter(f"{pair!r} is not NAME=WEIGHT") from exc
    _rewrite(file, parsed)
