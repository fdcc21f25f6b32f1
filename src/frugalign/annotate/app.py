"""The annotation web app (FastAPI) over the label ledger: the page, and a JSON API that the same bearer
token authenticates. Every acknowledged answer is committed to the ledger (SQLite with synchronous=FULL,
or PostgreSQL) before the response is sent; the OpenAPI schema is at /docs and /openapi.json. Each
server thread holds its own connection to the ledger.

    GET  /              the annotator's page
    GET  /api/next      the pair assigned to the signed-in annotator (text and rendered HTML) and their progress
    POST /api/label     {pair_id, choice: A | B | tie, comment}
    POST /api/skip      {pair_id}: pass on it; it goes to someone else, never back to you
    POST /api/undo      reopen your latest answer (of the last 10 minutes) to answer it again
    GET  /api/instructions   the guidelines (`annotate serve --instructions FILE`), as HTML
    GET  /api/export    the ledger's labels in TRL's preference format (admin tokens only)
"""

import json
import threading
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from frugalign.active.ledger import LEASE_S, LabelLedger, is_postgres
from frugalign.annotate.page import PAGE, POLICY, render_markdown

MAX_BODY = 64 * 1024  # bytes: an answer is a choice and a short comment
MAX_ECHO = 200  # characters of a rejected input shown back in a 422
# Swagger UI (/docs) and ReDoc load their code and fonts from CDNs and start with an inline script
DOCS_POLICY = ("default-src 'self' https://cdn.jsdelivr.net https://fonts.googleapis.com https://fonts.gstatic.com "
               "https://fastapi.tiangolo.com data: blob:; script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
               "style-src 'self' https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
               "frame-ancestors 'none'; base-uri 'none'")
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")


class Label(BaseModel):
    pair_id: str = Field(min_length=64, max_length=64, description="the pair's id, as /api/next gave it")
    choice: Literal["A", "B", "tie"] = Field(description="the better response as shown (A, B) or a tie")
    comment: str = Field("", max_length=2000, description="optional free text, stored with the label")


class Skip(BaseModel):
    pair_id: str = Field(min_length=64, max_length=64, description="the pair's id, as /api/next gave it")


class Guard:
    """ASGI middleware in front of every route: security headers on every response; the bearer token of
    an /api/ request checked before its body is read (401 without reading it); a body bounded while it
    streams in, whatever Content-Length says or if there is none (413 once over MAX_BODY, the rest
    unread, the connection closed)."""

    def __init__(self, app, authenticate):
        self.app, self.authenticate = app, authenticate

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        policy = DOCS_POLICY if scope["path"] in DOCS_PATHS else POLICY

        async def send_secured(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"content-security-policy", policy.encode()),
                                      (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff")]
            await send(message)

        async def refuse(status: int, detail: str, headers: dict | None = None):
            # the body may be unread: close the connection rather than read or misparse the rest
            response = JSONResponse({"detail": detail}, status, headers={"Connection": "close", **(headers or {})})
            await response(scope, receive, send_secured)

        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            return await refuse(400, f"Content-Length {length[:40].decode('latin-1')!r} is not a number of bytes")
        if length is not None and int(length) > MAX_BODY:
            return await refuse(413, f"request body over {MAX_BODY} bytes")
        if scope["path"].startswith("/api/"):
            scheme, _, credentials = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            name = await run_in_threadpool(self.authenticate, credentials) if scheme.lower() == "bearer" else None
            if name is None:
                return await refuse(401, "a valid bearer token is needed (a revoked or expired one is not)",
                                    {"WWW-Authenticate": "Bearer"})
            scope.setdefault("state", {})["annotator"] = name
        if (length is not None and int(length) > 0) or b"transfer-encoding" in headers:
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > MAX_BODY:
                    return await refuse(413, f"request body over {MAX_BODY} bytes")
                more = message.get("more_body", False)
            receive = _replay(b"".join(chunks), receive)
        await self.app(scope, receive, send_secured)


def _replay(body: bytes, receive):
    """An ASGI `receive` that gives `body` (already read) first, then whatever `receive` gives."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()
    return replayed


def _clip(value):
    """A rejected input as it is shown back: as is if short, else its first MAX_ECHO characters."""
    text = value if isinstance(value, str) else json.dumps(jsonable_encoder(value))
    return value if len(text) <= MAX_ECHO else f"{text[:MAX_ECHO]}... ({len(text)} characters)"


def create_app(ledger_path: str | Path, labels_per_pair: int = 1, instructions: str = "") -> FastAPI:
    """The app on the ledger file at `ledger_path` (which must exist: a run or `add-annotator` makes it);
    `instructions`: the annotators' guidelines, in Markdown."""
    guidelines = render_markdown(instructions) if instructions.strip() else ""
    if labels_per_pair < 1:
        raise ValueError(f"labels_per_pair must be at least 1, got {labels_per_pair}")
    if not is_postgres(ledger_path) and not Path(ledger_path).is_file():
        raise FileNotFoundError(f"{ledger_path}: no ledger there (add an annotator first, or start a run)")
    app = FastAPI(title="frugalign annotation", version="1",
                  description="Label pairs of responses; every acknowledged label is stored before the reply.")
    local = threading.local()  # one SQLite connection per server thread
    bearer = HTTPBearer(auto_error=False)

    def ledger() -> LabelLedger:
        if not hasattr(local, "ledger"):
            local.ledger = LabelLedger(ledger_path)
        return local.ledger

    app.add_middleware(Guard, authenticate=lambda token: ledger().annotator(token))

    # FastAPI reads these annotations at run time: no `from __future__ import annotations` in this module
    def annotator(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        """The signed-in annotator, whose token the Guard checked (`bearer` puts the scheme in /docs)."""
        return request.state.annotator

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{**e, "input": _clip(e["input"])} if "input" in e else e for e in error.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, 422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE

    @app.get("/api/next", summary="the next pair for the signed-in annotator")
    def next_pair(name: Annotated[str, Depends(annotator)]) -> dict:
        pair = ledger().assign(name, labels_per_pair)
        if pair is not None:
            pair["html"] = {k: render_markdown(pair[k]) for k in ("prompt", "a", "b")}
        return {"pair": pair, "progress": ledger().progress(name)}

    @app.post("/api/label", summary="answer the pair assigned to you")
    def label(answer: Label, name: Annotated[str, Depends(annotator)]) -> dict:
        try:
            ledger().submit(name, answer.pair_id, answer.choice, answer.comment, labels_per_pair)
        except KeyError:
            raise HTTPException(404, "no such pair assigned to you (ask /api/next for your pair)") from None
        except ValueError as e:
            raise HTTPException(409, str(e)) from None
        return {"stored": True, "progress": ledger().progress(name)}

    @app.post("/api/skip", summary="pass on the pair assigned to you: it goes to someone else")
    def skip(answer: Skip, name: Annotated[str, Depends(annotator)]) -> dict:
        try:
            ledger().skip(name, answer.pair_id)
        except KeyError:
            raise HTTPException(404, "no such pair assigned to you and unanswered (ask /api/next for your pair)") from None
        return {"skipped": True, "progress": ledger().progress(name)}

    @app.post("/api/undo", summary="reopen your latest answer, to answer it again")
    def undo(name: Annotated[str, Depends(annotator)]) -> dict:
        try:
            reopened = ledger().undo(name)
        except KeyError:
            raise HTTPException(409, f"nothing to undo: only your answers of the last {LEASE_S / 60:.0f} minutes can "
                                     "be reopened") from None
        return {"reopened": reopened, "progress": ledger().progress(name)}

    @app.get("/api/instructions", summary="the annotators' guidelines, rendered from Markdown")
    def instructions_html(name: Annotated[str, Depends(annotator)]) -> dict:
        return {"html": guidelines}

    @app.get("/api/export", summary="all labels, in TRL's preference format (admin tokens only)")
    def export(name: Annotated[str, Depends(annotator)]) -> list[dict]:
        if not ledger().is_admin(name):
            raise HTTPException(403, "exporting every annotator's labels needs an admin token "
                                     "(frugalign annotate add-annotator NAME --admin)")
        return ledger().preference_rows()

    return app
