"""The HTTP side of ``brainbench index serve``: clip-retrieval's ``/knn-service`` and ``/indices-list`` on
FastAPI + uvicorn (imported only when a server starts; the client in ``remote.py`` needs neither).

What a request may be, and what the server does when it is not:
- a body of at most ``MAX_BODY_BYTES`` (2 MiB; a 1024-d query is ~25 KB): a larger ``Content-Length`` gets 413
  before any of the body is read, a chunked body is cut off at the limit with 413; either way the connection
  closes. An invalid ``Content-Length`` (``-1``) gets 400 from the HTTP parser (h11);
- headers and body within ``read_timeout`` seconds (default 10) of the request's first byte, or 408 and the
  connection closes: half-sent requests cannot pile up (uvicorn's own ``timeout_keep_alive`` only starts after a
  response). Idle keep-alive connections close after ``keep_alive`` seconds (default 5);
- a JSON object (400 otherwise) whose every field validates against :class:`KnnQuery` (422 otherwise, the
  message naming the field): ``embedding_input`` a flat list of finite numbers as long as the index's
  dimension, ``num_images`` an integer in 1..``MAX_NUM_IMAGES`` (1000), ``indice_name`` the served name (400
  otherwise), ``modality`` "image"; ``text``/``image``/``image_url`` queries need a CLIP model on the server and
  are refused. Unknown extra fields are ignored (clip-retrieval's clients send a few we do not use);
- every error is a JSON object ``{"error": "..."}``, never a silent close or a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Annotated, Any, Literal

import h11
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from brainbench.errors import BrainbenchError

MAX_NUM_IMAGES = 1000
MAX_BODY_BYTES = 2 * 1024 * 1024
READ_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 512  # beyond this uvicorn answers 503 at once instead of queueing

log = logging.getLogger("brainbench.index_serve")

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class QueryError(ValueError):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class KnnQuery(BaseModel):
    """clip-retrieval's ``/knn-service`` request body, as far as an embedding query uses it."""

    model_config = ConfigDict(extra="ignore")

    embedding_input: list[Number] = Field(min_length=1)
    indice_name: str
    num_images: int = Field(strict=True, ge=1, le=MAX_NUM_IMAGES)
    num_result_ids: int | None = Field(None, strict=True, ge=1)
    modality: Literal["image"] = "image"
    text: str | None = None
    image: str | None = None
    image_url: str | None = None
    use_mclip: bool = False
    deduplicate: bool = False
    use_safety_model: bool = False
    use_violence_detector: bool = False
    aesthetic_score: str | int | float | None = None
    aesthetic_weight: str | int | float | None = None

    @field_validator("text", "image", "image_url")
    @classmethod
    def _embedding_queries_only(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError("only embedding_input queries are served (text and image queries need a CLIP model "
                             "on the server); send null")
        return None


def parse_query(body: Any, served: str, dim: int | None) -> KnnQuery:
    """The validated query, or QueryError (400/422) whose message names each bad field."""
    if not isinstance(body, dict):
        raise QueryError(400, f"the request body must be a JSON object, got a JSON {_json_type(body)}")
    try:
        query = KnnQuery.model_validate(body)
    except ValidationError as exc:
        raise QueryError(422, "; ".join(_describe(error) for error in exc.errors())) from None
    if query.indice_name != served:
        raise QueryError(400, f"unknown indice_name {query.indice_name!r}; served: {served!r}")
    if dim is not None and len(query.embedding_input) != dim:
        raise QueryError(422, f"embedding_input: {len(query.embedding_input)} values, but the index holds "
                              f"{dim}-d embeddings")
    return query


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "body"
    message = error["msg"]
    if error["type"] == "missing":
        return f"{where}: required field missing"
    if error["loc"] and error["loc"][0] == "num_images" and error["type"] in {"less_than_equal", "greater_than_equal"}:
        return f"{where}: must be an integer from 1 to {MAX_NUM_IMAGES} (got {error.get('input')!r})"
    return f"{where}: {message} (got {_short(error.get('input'))})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__)


def error(status: int, message: str, close: bool = False) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Connection": "close"} if close else None)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 (QueryError) once it is known or seen to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise QueryError(413, f"request body of {int(declared)} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise QueryError(413, f"request body over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(answer: Callable[[Any], Any], indices: Callable[[], list[str]],
              max_body: int = MAX_BODY_BYTES) -> FastAPI:
    """The ASGI app; ``answer(body)`` and ``indices()`` are the server's (blocking, run in a worker thread)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"unknown path {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return error(exc.status_code, message)

    @app.get("/indices-list")
    async def indices_list() -> JSONResponse:
        return JSONResponse(indices())

    @app.post("/knn-service")
    async def knn_service(request: Request) -> JSONResponse:
        try:
            raw = await read_body(request, max_body)
        except QueryError as exc:
            return error(exc.status, str(exc), close=True)
        if not raw.strip():
            return error(400, "empty request body; expected a JSON object")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, f"the request body is not JSON: {exc}")
        try:
            return JSONResponse(await run_in_threadpool(answer, body))
        except QueryError as exc:
            return error(exc.status, str(exc))
        except (ValueError, KeyError, TypeError, BrainbenchError) as exc:
            return error(400, str(exc))
        except Exception as exc:  # a bug of ours: say so in one line, keep the traceback in the server's log
            log.exception("knn-service failed")
            return error(500, f"internal error: {type(exc).__name__}: {exc}")

    return app


class ReadTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol plus a deadline on receiving each request (headers and body).

    The deadline starts at the connection (or, on a kept-alive connection, at the next request's first
    byte); a request not fully received by then gets 408 and the connection closes.
    """

    read_timeout: float = READ_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._disarm()  # the whole request is in

    def on_response_complete(self) -> None:
        self._disarm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        if self.cycle is None or not self.cycle.response_started:
            body = json.dumps({"error": f"request not received within {self.read_timeout:g} s"}).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                                 b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                                 + body)
        self.transport.close()


def make_server(app: FastAPI, read_timeout: float, keep_alive: int, quiet: bool) -> Any:
    """A uvicorn server for ``app`` with the limits above (not started)."""
    import uvicorn

    protocol = type("BoundedH11", (ReadTimeoutH11,), {"read_timeout": read_timeout})
    config = uvicorn.Config(app, http=protocol, loop="asyncio", lifespan="off", ws="none",
                            timeout_keep_alive=keep_alive, limit_concurrency=MAX_CONNECTIONS,
                            timeout_graceful_shutdown=2, log_level="warning" if quiet else "info",
                            access_log=not quiet, server_header=False)
    return uvicorn.Server(config)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 picks a free one), bound before the server starts so its URL is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock
