"""The console's pages. Each reads and changes through the public API (``PublicAPI``), as the
signed-in key: a page only decides what to show, the API decides what is allowed."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from services.console.api_client import Answer, PublicAPI, public_api
from services.console.pages_common import is_htmx, render
from services.console.search_form import FormError, search_filters
from services.console.viewer import Viewer, viewer

_PAGE_SIZE = 25
_JOB_STATES = ("queued", "running", "completed", "failed")
_SCOPES = ("query", "ingest", "admin", "ops")


def _page(
    request: Request, who: Viewer, template: str, context: dict[str, Any], status: int = 200
) -> Response:
    return render(
        request, template, {"viewer": who, "page": template.removesuffix(".html"), **context}, status
    )


def _back(path: str, **params: str) -> Response:
    """303 back to a page after a change (a reload then never posts it again)."""
    return RedirectResponse(f"{path}?{urlencode(params)}" if params else path, status_code=303)


def _failed(answer: Answer) -> int:
    """The status a page answers with after a failed API call: the API's own."""
    return answer.status if not answer.ok else 200


async def _collection_names(api: PublicAPI, who: Viewer) -> list[str]:
    """The collections the key may pick: its own list, else (with ingest) every one that exists."""
    if who.key.collections is not None:
        return sorted(who.key.collections)
    if who.can("ingest"):
        listed = await api.call("GET", "/v1/collections")
        if listed.ok:
            return [c["name"] for c in listed.body["collections"]]
    return []


async def _collections_page(
    request: Request, who: Viewer, api: PublicAPI, *, notice: str = "", error: str = "", status: int = 200
) -> Response:
    listed = await api.call("GET", "/v1/collections")
    context = {"listed": listed, "notice": notice, "error": error}
    return _page(request, who, "collections.html", context, status if status != 200 else _failed(listed))


def build_pages_router() -> APIRouter:
    router = APIRouter(prefix="/console", include_in_schema=False)

    @router.get("")
    @router.get("/")
    async def home() -> Response:
        return _back("/console/ask")

    @router.get("/ask")
    async def ask(
        request: Request, who: Viewer = Depends(viewer), api: PublicAPI = Depends(public_api)
    ) -> Response:
        return _page(request, who, "ask.html", {"collections": await _collection_names(api, who)})

    @router.get("/search")
    async def search_page(
        request: Request, who: Viewer = Depends(viewer), api: PublicAPI = Depends(public_api)
    ) -> Response:
        return _page(
            request, who, "search.html", {"collections": await _collection_names(api, who), "form": {}}
        )

    @router.post("/search")
    async def search(
        request: Request,
        query: str = Form(""),
        collection: str = Form("docs"),
        mode: str = Form("hybrid"),
        top_k: int = Form(10),
        doc_id: str = Form(""),
        source: str = Form(""),
        meta_key: str = Form(""),
        meta_value: str = Form(""),
        who: Viewer = Depends(viewer),
        api: PublicAPI = Depends(public_api),
    ) -> Response:
        body: dict[str, Any] = {"query": query, "collection": collection, "mode": mode, "top_k": top_k}
        fields = {"doc_id": doc_id, "source": source, "meta_key": meta_key, "meta_value": meta_value}
        try:
            if filters := search_filters(doc_id, source, meta_key, meta_value):
                body["filters"] = filters
        except FormError as exc:
            answer = Answer(422, {"error": {"code": "invalid_filter", "message": str(exc)}})
        else:
            answer = await api.call("POST", "/v1/search", json=body)
        context = {"result": answer, "form": body | fields}
        if is_htmx(request):
            return _page(request, who, "_hits.html", context, _failed(answer))
        context["collections"] = await _collection_names(api, who)
        return _page(request, who, "search.html", context, _failed(answer))

    @router.get("/collections")
    async def collections(
        request: Request,
        who: Viewer = Depends(viewer),
        api: PublicAPI = Depends(public_api),
        notice: str = "",
    ) -> Response:
        return await _collections_page(request, who, api, notice=notice)

    @router.post("/collections")
    async def create_collection(
        request: Request,
        name: str = Form(""),
        chunk_tokens: str = Form(""),
        who: Viewer = Depends(viewer),
        api: PublicAPI = Depends(public_api),
    ) -> Response:
        body: dict[str, Any] = {"name": name.strip()}
        if chunk_tokens.strip():
            body["chunk_tokens"] = chunk_tokens.strip()
        created = await api.call("POST", "/v1/collections", json=body)
        if created.ok:
            return _back("/console/collections", notice=f"Created {name.strip()}")
        return await _collections_page(request, who, api, error=created.error, status=created.status)

    @router.post("/collections/{name}/delete")
    async def delete_collection(
        request: Request,
        name: str,
        confirm: str = Form(""),
        who: Viewer = Depends(viewer),
        api: PublicAPI = Depends(public_api),
    ) -> Response:
        if confirm != name:  # typed confirmation: the page asks for the name itself
            error = f"Type the collection's name ({name}) to delete it."
            return await _collections_page(request, who, api, error=error, status=422)
        dropped = await api.call("DELETE", f"/v1/collections/{name}")
        if dropped.ok:
            return _back("/console/collections", notice=f"Deleted {name}")
        return await _collections_page(request, who, api, error=dropped.error, status=dropped.status)

    @router.get("/documents")
    async def documents(
        request: Request,
        collection: str = "",
        offset: int = Query(0, ge=0),
        q: str = "",
        notice: str = "",
        who: Viewer = Depends(viewer),
        api: PublicAPI = Depends(public_api),
    ) -> Response:
        names = await _collection_names(api, who)
        collection = collection or (names[0] if names else "")
        listed = Answer(200, {"documents": []})
        if collection:
            params = {"offset": offset, "limit": _PAGE_SIZE}
            listed = await api.call("GET", f"/v1/collections/{collection}/documents", params=params)
        docs = listed.body.get("documents", []) if listed.ok else []
        shown = [d for d in docs if q.lower() in d["doc_id"].lower()] if q else docs
        context = {
            "collections": names,
            "collection": collection,
            "listed": listed,
            "documents": shown,
            "offset": offset,
            "page_size": _PAGE_SIZE,
            "more": len(docs) == _PAGE_SIZE,
            "q": q,
            "notice": notice,
        }
        return _page(request, who, "documents.html", context, _failed(listed))

    @router.post("/documents/{collection}/delete")
    async def delete_document(
        request: Request,
        collection: str,
        doc_id: str = Form(""),
        who: Viewer = Depends(viewer),
        api: PublicAPI = Depends(public_api),
    ) -> Response:
        deleted = await api.call("DELETE", f"/v1/collections/{collection}/documents/{doc_id}")
        if deleted.ok:
            return _back("/console/documents", collection=collection, notice=f"Deleted {doc_id}")
        return _page(request, who, "error.html", {"error": deleted.error}, deleted.status)

    @router.get("/jobs")
    async def jobs(
        request: Request,
        collection: str = "",
        state: str = "",
        offset: int = Query(0, ge=0),
        who: Viewer = Depends(viewer),
        api: PublicAPI = Depends(public_api),
    ) -> Response:
        params: dict[str, Any] = {"offset": offset, "limit": _PAGE_SIZE}
        if collection:
            params["collection"] = collection
        if state:
            params["state"] = state
        listed = await api.call("GET", "/v1/jobs", params=params)
        context = {
            "listed": listed,
            # A poll (htmx) redraws the table only: no picker to fill, one API call per poll.
            "collections": [] if is_htmx(request) else await _collection_names(api, who),
            "collection": collection,
            "state": state,
            "states": _JOB_STATES,
            "offset": offset,
            "page_size": _PAGE_SIZE,
        }
        if is_htmx(request):
            return _page(request, who, "_jobs_table.html", context, _failed(listed))
        return _page(request, who, "jobs.html", context, _failed(listed))

    @router.get("/jobs/{job_id}")
    async def job(
        request: Request, job_id: str, who: Viewer = Depends(viewer), api: PublicAPI = Depends(public_api)
    ) -> Response:
        found = await api.call("GET", f"/v1/jobs/{job_id}")
        template = "_job_progress.html" if is_htmx(request) else "job.html"
        return _page(request, who, template, {"found": found, "job": found.body}, _failed(found))

    @router.get("/keys")
    async def keys(
        request: Request,
        who: Viewer = Depends(viewer),
        api: PublicAPI = Depends(public_api),
        notice: str = "",
    ) -> Response:
        listed = await api.call("GET", "/v1/keys")
        context = {"listed": listed, "scopes": _SCOPES, "notice": notice}
        return _page(request, who, "keys.html", context, _failed(listed))

    @router.post("/keys")
    async def create_key(
        request: Request,
        name: str = Form(""),
        scopes: list[str] = Form([]),
        collections: str = Form(""),
        rate_limit: str = Form("60/minute"),
        daily_token_quota: str = Form(""),
        who: Viewer = Depends(viewer),
        api: PublicAPI = Depends(public_api),
    ) -> Response:
        names = [c.strip() for c in collections.split(",") if c.strip()]
        body: dict[str, Any] = {
            "name": name.strip(),
            "scopes": scopes,
            "collections": names or None,
            "rate_limit": rate_limit.strip(),
        }
        if daily_token_quota.strip():
            body["daily_token_quota"] = daily_token_quota.strip()
        created = await api.call("POST", "/v1/keys", json=body)
        listed = await api.call("GET", "/v1/keys")
        # The secret is shown in this answer only; nothing keeps it (no redirect carries it).
        context = {
            "listed": listed,
            "scopes": _SCOPES,
            "created": created.body if created.ok else None,
            "error": created.error,
        }
        return _page(request, who, "keys.html", context, 201 if created.ok else created.status)

    @router.post("/keys/{key_id}/revoke")
    async def revoke_key(
        request: Request, key_id: str, who: Viewer = Depends(viewer), api: PublicAPI = Depends(public_api)
    ) -> Response:
        revoked = await api.call("DELETE", f"/v1/keys/{key_id}")
        if revoked.ok:
            return _back("/console/keys", notice=f"Revoked {key_id}")
        return _page(request, who, "error.html", {"error": revoked.error}, revoked.status)

    @router.get("/status")
    async def status(
        request: Request, who: Viewer = Depends(viewer), api: PublicAPI = Depends(public_api)
    ) -> Response:
        board = await api.call("GET", "/v1/status")
        template = "_status_board.html" if is_htmx(request) else "status.html"
        return _page(request, who, template, {"board": board}, _failed(board))

    return router
