"""The annotation web app (FastAPI) over the label ledger: the page, and a JSON API that the same bearer
token authenticates. Every acknowledged answer is committed to the ledger (SQLite, synchronous=FULL)
before the response is sent; the OpenAPI schema is at /docs and /openapi.json.

    GET  /              the annotator's page
    GET  /api/next      the pair assigned to the signed-in annotator (and their progress)
    POST /api/label     {pair_id, choice: A | B | tie, comment}
    GET  /api/export    the ledger's labels in TRL's preference format
"""

import threading
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from frugalign.active.ledger import LabelLedger
from frugalign.annotate.page import PAGE

MAX_BODY = 64 * 1024  # bytes: an answer is a choice and a short comment


class Label(BaseModel):
    pair_id: str = Field(min_length=64, max_length=64, description="the pair's id, as /api/next gave it")
    choice: Literal["A", "B", "tie"] = Field(description="the better response as shown (A, B) or a tie")
    comment: str = Field("", max_length=2000, description="optional free text, stored with the label")


def create_app(ledger_path: str | Path, labels_per_pair: int = 1) -> FastAPI:
    """The app on the ledger file at `ledger_path` (which must exist: a run or `add-annotator` makes it)."""
    if labels_per_pair < 1:
        raise ValueError(f"labels_per_pair must be at least 1, got {labels_per_pair}")
    if not Path(ledger_path).is_file():
        raise FileNotFoundError(f"{ledger_path}: no ledger there (add an annotator first, or start a run)")
    app = FastAPI(title="frugalign annotation", version="1",
                  description="Label pairs of responses; every acknowledged label is stored before the reply.")
    local = threading.local()  # one SQLite connection per server thread
    bearer = HTTPBearer(auto_error=False)

    def ledger() -> LabelLedger:
        if not hasattr(local, "ledger"):
            local.ledger = LabelLedger(ledger_path)
        return local.ledger

    # FastAPI reads these annotations at run time: no `from __future__ import annotations` in this module
    def annotator(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        name = ledger().annotator(credentials.credentials) if credentials else None
        if name is None:
            raise HTTPException(401, "a valid bearer token is needed", headers={"WWW-Authenticate": "Bearer"})
        return name

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            return JSONResponse({"detail": f"request body over {MAX_BODY} bytes"}, status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE

    @app.get("/api/next", summary="the next pair for the signed-in annotator")
    def next_pair(name: Annotated[str, Depends(annotator)]) -> dict:
        return {"pair": ledger().assign(name, labels_per_pair), "progress": ledger().progress(name)}

    @app.post("/api/label", summary="answer the pair assigned to you")
    def label(answer: Label, name: Annotated[str, Depends(annotator)]) -> dict:
        try:
            ledger().submit(name, answer.pair_id, answer.choice, answer.comment, labels_per_pair)
        except KeyError:
            raise HTTPException(404, "no such pair assigned to you (ask /api/next for your pair)") from None
        except ValueError as e:
            raise HTTPException(409, str(e)) from None
        return {"stored": True, "progress": ledger().progress(name)}

    @app.get("/api/export", summary="all labels, in TRL's preference format")
    def export(name: Annotated[str, Depends(annotator)]) -> list[dict]:
        return ledger().preference_rows()

    return app
