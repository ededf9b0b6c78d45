"""HTTP endpoint over a reward (``rlsys serve-reward``), so other jobs can score with it remotely.

``POST /score`` takes ``{"prompts": [...], "completions": [...], "columns": {name: [...]}}`` with
``Authorization: Bearer <token>`` and answers ``{"rewards": [...], "terms": {name: [...]}}``.
``GET /health`` needs no token (for probes). Every error answers ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException

from rlsys.errors import RewardError
from rlsys.rewards.remote import TOKEN_ENV

RewardCallable = Callable[[list[str], list[str], dict[str, list]], tuple[np.ndarray, dict[str, np.ndarray]]]
log = logging.getLogger(__name__)


class ScoreRequest(BaseModel):
    # strict: a number where a string belongs is a client bug, not something to coerce
    model_config = ConfigDict(strict=True, extra="forbid")
    prompts: list[str]
    completions: list[str]
    columns: dict[str, list[Any]] = {}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(part) for part in err["loc"]) or "body"
    return f"field '{field}': {err['msg']}"


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = HTTPException(
        413, f"request body is over {limit} bytes (serve.max_request_bytes); send smaller batches"
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, f"invalid Content-Length header {declared!r}")
        if int(declared) > limit:
            raise too_large
    # Count what actually arrives too: chunked bodies have no Content-Length.
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large  # stop reading here; the rest of the body is never buffered
    return bytes(body)


def _parse(body: bytes, max_batch: int) -> ScoreRequest:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(422, f"request body must be a JSON object, got {type(data).__name__}")
    try:
        req = ScoreRequest.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, _first_error(exc)) from None
    n = len(req.completions)
    if n > max_batch:
        raise HTTPException(413, f"{n} completions is over the limit of {max_batch} (serve.max_batch)")
    if len(req.prompts) != n:
        raise HTTPException(422, f"field 'prompts' has {len(req.prompts)} items for {n} completions")
    for name, values in req.columns.items():
        if len(values) != n:
            raise HTTPException(422, f"field 'columns.{name}' has {len(values)} values for {n} completions")
    return req


def create_app(reward: RewardCallable, *, token: str, max_request_bytes: int, max_batch: int) -> FastAPI:
    app = FastAPI(title="rlsys reward server", docs_url=None, redoc_url=None, openapi_url=None)
    # Reward functions are not thread-safe: one call at a time, later requests wait their turn.
    limiter = anyio.CapacityLimiter(1)

    def check_token(authorization: str | None = Header(default=None)) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/score", dependencies=[Depends(check_token)])
    async def score(request: Request) -> JSONResponse:
        req = _parse(await _read_body(request, max_request_bytes), max_batch)
        try:
            total, terms = await anyio.to_thread.run_sync(
                reward, req.prompts, req.completions, req.columns, limiter=limiter
            )
        except Exception as exc:  # the traceback goes to the server log, never into the response
            log.exception("reward call failed")
            message = str(exc) if isinstance(exc, RewardError) else f"reward raised {type(exc).__name__}: {exc}"
            return JSONResponse({"error": message}, status_code=500)
        return JSONResponse({
            "rewards": np.asarray(total, dtype=float).tolist(),
            "terms": {name: np.asarray(v, dtype=float).tolist() for name, v in terms.items()},
        })

    return app


def resolve_token(configured: str | None) -> tuple[str, bool]:
    """The token to require: configured, else ``$RLSYS_REWARD_TOKEN``, else a new one (second value True)."""
    token = configured or os.environ.get(TOKEN_ENV)
    if token:
        return token, False
    return secrets.token_urlsafe(32), True


def serve(
    reward: RewardCallable, *, host: str, port: int, token: str, max_request_bytes: int, max_batch: int
) -> None:
    """Serve ``reward`` until interrupted (blocking); Ctrl-C or SIGTERM stop it after the requests in flight."""
    import uvicorn

    app = create_app(reward, token=token, max_request_bytes=max_request_bytes, max_batch=max_batch)
    print(f"reward server listening on http://{host}:{port} (POST /score with 'Authorization: Bearer <token>')",
          flush=True)
    try:
        # no lifespan events: the app has none, and uvicorn's lifespan task dies with a traceback on Ctrl-C
        uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="off")
    except KeyboardInterrupt:
        pass  # uvicorn has shut down cleanly, then passes the signal on
    finally:
        print(f"reward server on port {port} stopped", flush=True)
