"""``quarry``: up, down, status, ask, ingest, keys."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn
from urllib.parse import urlparse

import httpx
import redis
import typer
from rich.console import Console
from rich.table import Table

from services.cli import detached
from services.cli.api_key import DEFAULT_DATA_DIR, DEV_KEY_FILE, api_key
from services.cli.eval import eval_command
from services.cli.keys import keys_app
from services.cli.suite import Child, Ports, Suite, SuiteError
from services.cli.unreachable import fail_not_json, fail_unreachable, not_listening, reaching
from services.cli.variants import variants_app
from services.gateway.keys import SCOPES

app = typer.Typer(help="Quarry: a RAG microservice suite.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(variants_app, name="variants")
console = Console()

DEFAULT_GATEWAY = "http://127.0.0.1:8100"
REDIS_URL = os.environ.get("QUARRY_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _ensure_redis(url: str, suite: Suite) -> None:
    if _redis_answers(url):
        return
    parsed = urlparse(url)
    server = shutil.which("redis-server")
    if parsed.hostname not in ("127.0.0.1", "localhost") or server is None:
        console.print(
            f"[red]No Redis answers at {url}.[/red] Install one (Debian: apt-get install redis-server) "
            "or point QUARRY_REDIS_URL at a running Redis."
        )
        raise typer.Exit(1)
    child = Child(
        "redis",
        [
            server,
            "--port",
            str(parsed.port or 6379),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        {},
        None,
        suite.data_dir / "logs" / "redis.log",
    )
    (suite.data_dir / "logs").mkdir(parents=True, exist_ok=True)
    child.start()
    suite.children = {"redis": child, **suite.children}
    for _ in range(50):
        if _redis_answers(url):
            return
        time.sleep(0.1)
    raise SuiteError("redis-server did not start")


def _dev_key(data_dir: Path, redis_url: str) -> str:
    from services.gateway.keys import KeyStore

    path = data_dir / DEV_KEY_FILE
    client = redis.asyncio.Redis.from_url(redis_url)
    store = KeyStore(client)

    async def _get() -> str:
        try:
            if path.exists():
                existing = path.read_text().strip()
                if await store.verify(existing) is not None:
                    return existing
            secret, _ = await store.create("dev", set(SCOPES), None, "600/minute")
            path.write_text(secret + "\n")
            path.chmod(0o600)
            return secret
        finally:
            await client.aclose()

    return asyncio.run(_get())


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="Where Milvus data and logs live.")] = DEFAULT_DATA_DIR,
    examples: Annotated[Path | None, typer.Option(help="Documents to ingest at start.")] = Path(
        "examples/docs"
    ),
    collection: Annotated[str, typer.Option(help="Collection for the examples.")] = "docs",
    ask_first: Annotated[
        str | None, typer.Option("--ask", help="A question to ask through the gateway once up ('' to skip).")
    ] = "How does the gateway rate limit clients?",
    detach_after_ready: Annotated[
        bool,
        typer.Option(
            help="Return once everything is up, leaving the suite running in the background "
            f"(pids in DATA_DIR/{detached.PID_FILE}); `quarry down` stops it."
        ),
    ] = False,
    free_ports: Annotated[
        bool,
        typer.Option(
            help="Every service on a free port (shown at start) instead of 8100-8105 and 19539, "
            "e.g. beside a suite already running (detached, `quarry ask` and `quarry status` find them)."
        ),
    ] = False,
) -> None:
    """Start Redis (if needed), Milvus Lite and every service; ingest the examples; wait for Ctrl-C
    (or, with --detach-after-ready, return and leave them running until `quarry down`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _refuse_if_detached(data_dir)
    started = time.perf_counter()
    suite = Suite(
        data_dir=data_dir.resolve(), redis_url=REDIS_URL, ports=Ports.free() if free_ports else Ports()
    )
    suite.define()
    _ensure_redis(REDIS_URL, suite)
    with console.status("starting Milvus Lite, embedder, llm, rag, gateway..."):
        suite.start()
    try:
        _welcome(suite, data_dir, examples, collection, ask_first, started, detach_after_ready)
        if detach_after_ready:
            urls = {name: suite.url(name) for name in ("gateway", "rag", "embedder", "llm", "ingest")}
            path = detached.write(
                data_dir, list(suite.children.values()), {**urls, "milvus": suite.milvus_uri}
            )
            console.print(
                f"\nthe suite runs in the background (pids in {path}); stop it with "
                f"[bold]quarry down{_data_dir_flag(data_dir)}[/bold]"
            )
            return
    except BaseException:
        suite.stop()  # a start-up that fails half way must not leave services behind
        raise
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            for name, child in suite.children.items():
                if not child.alive():
                    console.print(f"[red]{name} exited[/red]; see {child.log_path}")
                    stop = True
            time.sleep(0.5)
    finally:
        console.print("stopping...")
        suite.stop()


def _welcome(
    suite: Suite,
    data_dir: Path,
    examples: Path | None,
    collection: str,
    ask_first: str | None,
    started: float,
    detach: bool,
) -> None:
    """Ingests the examples, makes the dev key, shows where everything is and asks the first question."""
    if examples is not None and examples.exists():
        from ingest.config import IngestSettings
        from ingest.runner import ingest_path

        os.environ.update(suite.service_env())
        report = asyncio.run(ingest_path(examples, collection, IngestSettings()))
        console.print(
            f"ingested {examples} into {collection!r}: {report.added} added, {report.updated} updated, "
            f"{report.unchanged} unchanged, {report.failed} failed"
        )
    key = _dev_key(data_dir, REDIS_URL)
    elapsed = time.perf_counter() - started
    table = Table(title=f"Quarry is up ({elapsed:.1f} s)")
    table.add_column("service")
    table.add_column("url")
    for name in ("gateway", "rag", "embedder", "llm"):
        table.add_row(name, suite.url(name))
    table.add_row("milvus", suite.milvus_uri)
    table.add_row("redis", REDIS_URL)
    console.print(table)
    console.print(f"dev API key (also in {data_dir / DEV_KEY_FILE}): [bold]{key}[/bold]")
    console.print(f"web console (sign in with that key): [bold]{suite.url('gateway')}/console[/bold]")
    if ask_first:
        console.print(f"\n[bold]Q:[/bold] {ask_first}")
        _print_answer(suite.url("gateway"), key, ask_first, collection, top_k=3)
    url = "" if suite.url("gateway") == DEFAULT_GATEWAY else f" --url {suite.url('gateway')}"
    stops = f"quarry down{_data_dir_flag(data_dir)} stops everything" if detach else "Ctrl-C stops everything"
    console.print(f'\ntry: quarry ask{url} "What does the gateway do?"   ({stops})')


def _data_dir_flag(data_dir: Path) -> str:
    return "" if data_dir == DEFAULT_DATA_DIR else f" --data-dir {data_dir}"


def _refuse_if_detached(data_dir: Path) -> None:
    """A suite left running from ``data_dir`` holds its ports and its Milvus data: say so, and
    how to stop it, rather than fail on a busy port half way through the start."""
    # A damaged file tells nothing either way; a busy port, if any, says the rest.
    running = detached.read_if_readable(data_dir)
    if running is None:
        return
    if not detached.alive(running):
        (data_dir / detached.PID_FILE).unlink(missing_ok=True)
        return
    print(
        f"quarry: a suite started with --detach-after-ready is running from {data_dir} "
        f"(gateway {running.urls.get('gateway', '?')}); stop it with `quarry down{_data_dir_flag(data_dir)}`",
        file=sys.stderr,
    )
    raise typer.Exit(1)


@app.command()
def down(
    data_dir: Annotated[Path, typer.Option(help="The data dir `quarry up` used.")] = DEFAULT_DATA_DIR,
) -> None:
    """Stop a suite that `quarry up --detach-after-ready` left running."""
    try:
        stopped = detached.stop(data_dir)
    except detached.DamagedPidFile as exc:
        print(f"quarry: {exc}; stop its processes by hand (logs in {data_dir / 'logs'})", file=sys.stderr)
        raise typer.Exit(1) from None
    if not stopped:
        console.print(f"no suite running from {data_dir} (one in the foreground stops with Ctrl-C)")
        return
    console.print(f"stopped {', '.join(stopped)}")


@app.command()
def ask(
    question: str,
    collection: Annotated[str, typer.Option()] = "docs",
    top_k: Annotated[int, typer.Option()] = 4,
    url: Annotated[
        str | None,
        typer.Option(help="Gateway URL (default: a detached suite's from DATA_DIR, else the local port)."),
    ] = None,
    key: Annotated[str | None, typer.Option(help="API key (default: QUARRY_API_KEY or the dev key).")] = None,
    data_dir: Annotated[Path, typer.Option()] = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")] = False,
) -> None:
    """Ask a question through the gateway and print the answer with its citations."""
    if url is None:
        url = _detached_gateway(data_dir) or DEFAULT_GATEWAY
    if not _print_answer(url, api_key(key, data_dir), question, collection, top_k, as_json):
        raise typer.Exit(1)


def _detached_gateway(data_dir: Path) -> str | None:
    """The gateway URL a suite started with ``up --detach-after-ready`` recorded, if any."""
    recorded = detached.read_if_readable(data_dir)
    return recorded.urls.get("gateway") if recorded is not None else None


_ANSWERED_BY = {
    "llm": "the LLM (every sentence verified)",
    "extractive": "quotes from the sources",
    "none": "nothing: the documents don't answer this",
}


def _print_answer(
    url: str, key: str, question: str, collection: str, top_k: int, as_json: bool = False
) -> bool:
    with reaching("the gateway", url):
        response = httpx.post(
            f"{url}/v1/query",
            json={"question": question, "collection": collection, "top_k": top_k},
            headers={"authorization": f"Bearer {key}"},
            timeout=120,
        )
    try:
        body = response.json()
    except ValueError:
        fail_not_json("the gateway", url, response)
    if as_json or response.status_code != 200:
        console.print_json(json.dumps(body))
        return response.status_code == 200
    console.print(f"[bold]{body['answer']}[/bold]\n")
    for c in body["citations"]:
        relevance = c.get("relevance")
        shown = f"relevance {relevance:.3f}" if relevance is not None else f"score {c['score']:.3f}"
        console.print(f"  [{c['n']}] {c['title']} ({c['source']}, {shown})")
    flags = ", ".join(body["degraded"]) or "none"
    source = _ANSWERED_BY.get(body.get("answered_by", ""), "?")
    console.print(f"\nanswered by: {source}  cached: {body['cached']}  degraded: {flags}")
    console.print(f"timings: {body['timings_ms']}")
    return True


@app.command()
def status(data_dir: Annotated[Path, typer.Option()] = DEFAULT_DATA_DIR) -> None:
    """Show each service's readiness (the ports of a suite `quarry up --detach-after-ready` left
    running from DATA_DIR, else the default local ports); exit 1 unless all are ready."""
    recorded = detached.read_if_readable(data_dir)
    ports = detached.ports(recorded) if recorded is not None else Ports()
    suite = Suite(data_dir=data_dir.resolve(), redis_url=REDIS_URL, ports=ports)
    suite.define()
    table = Table(title="Quarry status")
    table.add_column("service")
    table.add_column("state")
    states = suite.status() | {"redis": "ready" if _redis_answers(REDIS_URL) else "not ready"}
    for name, state in states.items():
        table.add_row(name, f"[green]{state}[/green]" if state == "ready" else f"[red]{state}[/red]")
    console.print(table)
    # Scripts and readiness checks read the exit status: 0 only when everything is ready.
    if any(state != "ready" for state in states.values()):
        raise typer.Exit(1)


@app.command()
def ingest(
    path: Path,
    collection: Annotated[str, typer.Option()] = "docs",
    prune: Annotated[
        bool, typer.Option(help="Delete documents of the collection that are no longer under PATH.")
    ] = False,
) -> None:
    """Ingest files (or a folder) into a collection with a progress bar, then print a summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ingest.config import IngestSettings
    from ingest.runner import IngestRefused, IngestTimedOut, ingest_path
    from ingest.store import StoreUnavailable
    from services.common.embeddings_client import EmbeddingsUnavailable

    settings = IngestSettings()

    services = {
        "Redis": settings.redis_url,
        "Milvus": settings.milvus_uri,
        "the embedder": settings.embedder_url,
    }
    started = time.perf_counter()
    embedded = 0
    failure = ""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("docs · {task.fields[chunks]} chunks · {task.fields[rate]:.0f} chunks/s embedded"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"ingest → {collection}", total=None, chunks=0, rate=0.0)

        def on_embedded(n: int) -> None:
            nonlocal embedded
            embedded += n
            progress.update(task, rate=embedded / max(time.perf_counter() - started, 1e-6))

        def on_documents(done: int, chunks: int) -> None:
            progress.advance(task, done)
            progress.update(task, chunks=progress.tasks[task].fields["chunks"] + chunks)

        def unreachable(service: str, why: str) -> NoReturn:
            progress.stop()  # the bar holds stderr while it runs
            fail_unreachable(service, services[service], why)

        def check_services() -> None:
            # Before reading a file: indexing waits out a dependency's outage (dependency_wait_s),
            # which for a suite that is not running at all is minutes of a bar that never moves.
            for service, url in services.items():
                if (why := not_listening(url)) is not None:
                    unreachable(service, why)

        try:
            report = asyncio.run(
                ingest_path(
                    path,
                    collection,
                    settings,
                    prune=prune,
                    before_loading=check_services,
                    on_loaded=lambda total: progress.update(task, total=total),
                    on_documents=on_documents,
                    on_embedded=on_embedded,
                )
            )
        except IngestRefused as exc:
            progress.stop()
            console.print(f"[red]refused[/red] {exc}")
            raise typer.Exit(2) from None
        except IngestTimedOut as exc:
            report, failure = exc.report, str(exc)
        except StoreUnavailable as exc:  # went away during the run, for longer than it waits
            unreachable("Milvus", str(exc))
        except EmbeddingsUnavailable as exc:
            unreachable("the embedder", str(exc))
        except redis.ConnectionError as exc:
            unreachable("Redis", str(exc))
    columns = ("added", "updated", "unchanged", "deleted", "failed", "chunks")
    table = Table(title=f"ingest {path} → {collection} ({time.perf_counter() - started:.1f} s)")
    for name in columns:
        table.add_column(name, justify="right")
    table.add_row(*(str(getattr(report, n)) for n in columns))
    console.print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}")
    for doc_id, error in report.errors.items():
        console.print(f"[red]failed[/red] {doc_id}: {error}")
    if failure:
        console.print(f"[red]failed[/red] {failure}")
    if report.failed or failure:
        raise typer.Exit(1)


app.command(name="eval")(eval_command)


def main() -> None:
    app()
