"""The web console in a real headless Chromium (Debian's), against the running suite over HTTP.

Playwright drives the system's browser (``executable_path``): it never downloads one. Each page
is screenshotted into docs/console/, which docs/console.md shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.cli.suite import Suite
from tests.conftest import KeyFactory

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "docs"
# A file that says it is a PDF and is not one: its document fails alone, with its reason.
BROKEN_PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> this is not really a PDF"
ANSWER_TIMEOUT_MS = 300_000


def _chromium() -> str | None:
    for candidate in (os.environ.get("QUARRY_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found (Debian: apt-get install chromium; or set QUARRY_CHROMIUM)"
)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[playwright_api.Browser]:
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: playwright_api.Browser) -> AsyncIterator[playwright_api.Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    await context.close()
    assert errors == [], f"script errors on the page: {errors}"


async def _shot(page: playwright_api.Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def _sign_in(page: playwright_api.Page, gateway: str, key: str, shot: bool = False) -> None:
    await page.goto(f"{gateway}/console/ask")
    assert page.url.endswith("/console/sign-in")  # no session yet: sent to sign in
    await page.get_by_label("API key").fill(key)
    if shot:
        await _shot(page, "sign-in")
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/console/ask")


def _nav(page: playwright_api.Page, name: str) -> playwright_api.Locator:
    return page.get_by_role("navigation", name="Console").get_by_role("link", name=name, exact=True)


async def _search(page: playwright_api.Page) -> str:
    """Submits the Search form and returns the hits section once htmx has swapped the answer in."""
    # Emptied first, so an answer identical to the last one is still seen arriving.
    await page.locator("#hits").evaluate("el => el.replaceChildren()")
    await page.get_by_role("button", name="Search").click()
    await page.locator("#hits > *").first.wait_for()
    return await page.locator("#hits").inner_text()


async def _session_cookie(page: playwright_api.Page) -> dict[str, object]:
    cookies = [c for c in await page.context.cookies() if c["name"] == "quarry_session"]
    assert len(cookies) == 1
    return dict(cookies[0])


async def test_content_team_flow_upload_job_ask_delete_sign_out(
    page: playwright_api.Page, suite: Suite, make_key: KeyFactory, collection_name: str
) -> None:
    gateway = suite.url("gateway")
    key = await make_key({"query", "ingest", "admin", "ops"})
    await _sign_in(page, gateway, key, shot=True)
    cookie = await _session_cookie(page)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert key not in str(await page.evaluate("() => JSON.stringify(localStorage) + document.cookie"))

    # Collections: create one.
    await _nav(page, "Collections").click()
    await page.get_by_label("Name (a letter").fill(collection_name)
    await page.get_by_role("button", name="Create", exact=True).click()
    await page.get_by_role("status").filter(has_text=f"Created {collection_name}").wait_for()

    # Documents: upload two files, one a broken PDF; the page follows the job to the end.
    await page.goto(f"{gateway}/console/documents?collection={collection_name}")
    await page.get_by_label("Files").set_input_files(
        [
            {
                "name": "embedder.md",
                "mimeType": "text/markdown",
                "buffer": (EXAMPLES / "embedder.md").read_bytes(),
            },
            {"name": "broken.pdf", "mimeType": "application/pdf", "buffer": BROKEN_PDF},
        ]
    )
    await page.get_by_role("button", name="Upload and ingest").click()
    await page.wait_for_url("**/console/jobs/job_*")
    await page.locator("#job[data-state=completed]").wait_for(timeout=180_000)
    assert (await page.locator("#job-state").inner_text()) == "done"
    errors = page.locator(".doc-error")
    assert await errors.count() == 1
    assert "broken.pdf" in await errors.inner_text()
    await _shot(page, "job")

    await _nav(page, "Jobs").click()
    row = page.locator("tr.job").first
    assert await row.get_attribute("data-state") == "completed"
    await _shot(page, "jobs")

    await page.goto(f"{gateway}/console/collections")
    table = await page.locator("table").first.inner_text()
    assert collection_name in table
    await _shot(page, "collections")

    await page.goto(f"{gateway}/console/documents?collection={collection_name}")
    assert await page.locator("tr.document").count() == 1  # the broken PDF was not stored
    await _shot(page, "documents")

    # Ask: a streamed answer whose sentences cite their sources.
    await _nav(page, "Ask").click()
    await page.get_by_label("Collection").select_option(collection_name)
    await page.get_by_label("Question").fill("What does the embedder do?")
    await page.locator("#ask-form").get_by_role("button", name="Ask").click()
    await page.locator("#answer[data-done=true]").wait_for(state="attached", timeout=ANSWER_TIMEOUT_MS)
    assert await page.locator("#answer").get_attribute("aria-live") == "polite"
    cited = page.locator("#answer .sentence .cite")
    assert await cited.count() >= 1
    target = (await cited.first.get_attribute("href") or "").removeprefix("#")
    assert await page.locator(f"li#{target}").count() == 1  # each marker links to its source
    await page.locator("#answer .sentence").first.hover()
    assert await page.locator("#sources li.linked").count() >= 1  # highlighted on hover
    flags = await page.locator("#flags").inner_text()
    assert "degraded" in flags and "grounded" in flags and "variant" in flags
    # Rate it: the thumbs go to POST /v1/feedback as the session, CSRF token included.
    await page.locator("#rate").get_by_role("button", name="Yes").click()
    await page.get_by_text("Thanks: recorded as up.").wait_for(timeout=10_000)
    await _shot(page, "ask")

    # Search: each mode finds the document and shows the scores its retrievers gave.
    await _nav(page, "Search").click()
    await page.get_by_label("Collection").select_option(collection_name)
    await page.get_by_label("Query", exact=True).fill("embedder vectors")
    for mode, scored in (("dense", {"dense"}), ("bm25", {"bm25"}), ("hybrid", {"dense", "bm25"})):
        await page.get_by_label(mode, exact=True).check()
        hits = await _search(page)
        assert f"mode {mode}" in hits
        first = page.locator("tr.hit[data-doc-id='embedder.md']").first
        for score in ("dense", "bm25"):
            shown = await first.locator(f"td[data-score={score}]").inner_text()
            assert (shown != "—") == (score in scored), (mode, score, shown)
    # Filters: on source and on a metadata key (an uploaded file's format), each narrowing.
    await page.get_by_label("Source").fill("embedder.md")
    await page.get_by_label("Metadata key").fill("format")
    await page.get_by_label("Metadata value").fill("pdf")
    assert "No hits." in await _search(page)
    await page.get_by_label("Metadata value").fill("")
    assert "needs both a key and a value" in await _search(page)
    await page.get_by_label("Metadata key").fill("not-a-key")
    await page.get_by_label("Metadata value").fill("md")
    assert "must match" in await _search(page)  # the API's own refusal (422), shown
    await page.get_by_label("Metadata key").fill("format")
    await page.get_by_label("Source").fill("gateway.md")
    await page.get_by_label("Metadata value").fill("md")
    assert "No hits." in await _search(page)
    await page.get_by_label("Source").fill("embedder.md")
    await _search(page)
    assert await page.locator("tr.hit[data-doc-id='embedder.md']").count() >= 1
    assert (
        await page.locator("tr.hit").count()
        == await page.locator("tr.hit[data-doc-id='embedder.md']").count()
    )
    await _shot(page, "search")

    # Delete the document: it leaves the search results.
    await page.goto(f"{gateway}/console/documents?collection={collection_name}")
    await page.get_by_role("button", name="Delete embedder.md").click()
    await page.get_by_role("status").filter(has_text="Deleted embedder.md").wait_for()
    assert await page.locator("tr.document").count() == 0
    await page.goto(f"{gateway}/console/search")
    await page.get_by_label("Collection").select_option(collection_name)
    await page.get_by_label("Query", exact=True).fill("embedder vectors")
    await page.get_by_role("button", name="Search").click()
    await page.get_by_text("No hits.").wait_for()
    assert await page.locator("tr.hit[data-doc-id='embedder.md']").count() == 0

    # Keys: a new key's secret is shown once; Status: every service ready.
    await _nav(page, "Keys").click()
    await page.get_by_label("Name", exact=True).fill("console-made")
    await page.get_by_label("query").check()
    await page.get_by_role("button", name="Create key").click()
    secret = await page.get_by_label("Secret").input_value()
    assert secret.startswith("qk_")
    await _shot(page, "keys")
    await _nav(page, "Keys").click()  # the page read again: the secret is not shown again
    assert await page.get_by_label("Secret").count() == 0
    await _nav(page, "Status").click()
    for service in ("gateway", "rag", "ingest", "embedder", "llm"):
        assert await page.locator(f"tr.service[data-service={service}] .state").inner_text() == "ready"
    # Live figures from each service's /metrics, ingest's queue depth among them.
    ingest = page.locator("tr.service[data-service=ingest]")
    assert await ingest.locator("[data-figure=other]").inner_text() == "queue: 0 jobs"
    rag = page.locator("tr.service[data-service=rag]")
    assert "degraded answers:" in await rag.locator("[data-figure=other]").inner_text()
    assert " ms / " in await rag.locator("[data-figure=latency]").inner_text()
    # The board's next refresh (every 5 s) has a window to give rates over.
    gateway_requests = page.locator("tr.service[data-service=gateway] [data-figure=requests]")
    await gateway_requests.filter(has_text="/s)").wait_for(timeout=15_000)
    await _shot(page, "status")

    # Sign out: the session ends on the server, so the old cookie opens nothing.
    old = {"quarry_session": str(cookie["value"])}
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/console/sign-in")
    async with httpx.AsyncClient(base_url=gateway, cookies=old, timeout=30) as client:
        api = await client.get("/v1/collections")
        assert api.status_code == 401 and api.json()["error"]["code"] == "session_expired"
        console = await client.get("/console/collections")
        assert console.status_code == 303 and console.headers["location"] == "/console/sign-in"
    await page.goto(f"{gateway}/v1/collections")  # the browser itself: no cookie left to send
    assert "unauthorized" in await page.content()
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        await client.delete(f"/v1/collections/{collection_name}", headers={"authorization": f"Bearer {key}"})


async def test_a_query_only_key_sees_no_ingest_or_key_controls_and_forged_posts_are_refused(
    page: playwright_api.Page, suite: Suite, make_key: KeyFactory, collection_name: str
) -> None:
    gateway = suite.url("gateway")
    reader = await make_key({"query"}, {collection_name})
    await _sign_in(page, gateway, reader)
    nav = page.get_by_role("navigation", name="Console")
    assert await nav.get_by_role("link").all_inner_texts() == ["Ask", "Search"]
    # The picker offers the key's own collections only.
    assert await page.get_by_label("Collection").locator("option").all_inner_texts() == [collection_name]
    for path in ("/console/collections", "/console/documents", "/console/keys", "/console/jobs"):
        response = await page.goto(f"{gateway}{path}")
        assert response is not None and response.status == 403, path
        assert await page.get_by_role("button", name="Create").count() == 0
        assert await page.get_by_label("Files").count() == 0
    await page.goto(f"{gateway}/console/keys")
    await _shot(page, "query-only-key")

    # A forged post (another site's form, no CSRF token) is refused, and so is a scripted one.
    forged = await page.request.post(
        f"{gateway}/console/collections", form={"name": collection_name}, max_redirects=0
    )
    assert forged.status == 403
    # One within the key's scope too, so the refusal is the missing token's, not the scope's.
    forged_search = await page.request.post(
        f"{gateway}/console/search", form={"query": "q", "collection": collection_name}, max_redirects=0
    )
    assert forged_search.status == 403 and "x-csrf-token" in await forged_search.text()
    direct = await page.request.post(
        f"{gateway}/v1/search", data={"query": "q", "collection": collection_name}
    )
    assert direct.status == 403 and (await direct.json())["error"]["code"] == "csrf_failed"
    token = await page.locator("meta[name=csrf-token]").get_attribute("content")
    allowed = await page.request.post(
        f"{gateway}/v1/search",
        data={"query": "q", "collection": collection_name},
        headers={"x-csrf-token": token or ""},
    )
    assert allowed.status != 403  # with the token, only the key's scope decides (404: no such collection)
    ingest = await page.request.post(
        f"{gateway}/v1/collections", data={"name": collection_name}, headers={"x-csrf-token": token or ""}
    )
    assert ingest.status == 403 and (await ingest.json())["error"]["code"] == "insufficient_scope"
