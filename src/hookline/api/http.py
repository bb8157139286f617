"""The HTTP seam shared by every resource module: routing, auth, bodies, errors, paging.

Each handler is declared with ``@route(...)``, which records what the OpenAPI document needs
(method, path, body and response types, status) and wraps the handler so that it receives an
authenticated ``Call`` and a decoded, validated body, and returns a msgspec Struct (or None).
Errors anywhere become Svix-shaped ``{"code", "detail"}`` bodies; nothing a client sends can
produce a 5xx.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hookline import errors
from hookline.api import idempotency
from hookline.models import Page, Token

if TYPE_CHECKING:
    from hookline.api.services import Services

T = TypeVar("T")
MAX_LIMIT = 250
DEFAULT_LIMIT = 50
JSON = "application/json"

log = structlog.get_logger("hookline.api")
_encoder = msgspec.json.Encoder()
_LOC = re.compile(r"`\$(.*)`$")


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated API call: the services, the caller's token and the raw request."""

    api: Services
    token: Token
    request: Request

    @property
    def org_id(self) -> str:
        return self.token.org_id

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])

    def query(self, name: str) -> str | None:
        if not self.request.scope["query_string"]:  # the common case; skips parsing
            return None
        return self.request.query_params.get(name)


@dataclass(frozen=True, slots=True)
class Operation:
    """What ``@route`` records about a handler, for the router and the OpenAPI document."""

    method: str
    path: str
    name: str
    summary: str
    status: int
    body: type[Any] | None
    response: Any
    query: tuple[str, ...]
    tag: str
    auth: bool
    endpoint: AsgiHandler = field(repr=False)


OPERATIONS: list[Operation] = []


class AsgiHandler:
    """A handler as a plain ASGI app.

    Starlette wraps a *function* endpoint in two more layers (request/response adapter and
    exception-handler dispatch); an ASGI object is called directly. Handlers already turn every
    expected error into a response, so those layers only cost time on every request.
    """

    __slots__ = ("_answer",)

    def __init__(self, answer: Callable[[Request], Awaitable[Response]]) -> None:
        self._answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._answer(Request(scope, receive))
        await response(scope, receive, send)


def route(
    method: str,
    path: str,
    *,
    status: int = 200,
    body: type[Any] | None = None,
    response: Any = None,
    query: tuple[str, ...] = (),
    tag: str = "",
    auth: bool = True,
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Declare an API operation under ``/api/v1``; see the module docstring."""

    def register(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def answer(request: Request) -> Response:
            services: Services = request.app.state.services
            try:
                token = await authenticate(services, request) if auth else _ANONYMOUS
                raw = await read_body(request, services.max_payload_bytes)
                call = Call(api=services, token=token, request=request)

                async def run() -> Response:
                    args: list[Any] = [call]
                    if body is not None:
                        args.append(decode(raw, body))
                    result = await handler(*args)
                    if isinstance(result, Response):
                        return result
                    if result is None:
                        return Response(status_code=204 if status == 200 else status)
                    return Response(_encoder.encode(result), status, media_type=JSON)

                if method == "POST" and auth:
                    return await idempotency.guard(call, raw, run)
                return await run()
            except errors.HooklineError as exc:
                return error_response(exc)
            except Exception:
                # A bug, not the client's doing: log it and answer in the API's shape rather than
                # Starlette's plain-text 500.
                log.exception("request_failed", method=method, route=path)
                internal = {"code": "internal_error", "detail": "Internal server error"}
                return Response(_encoder.encode(internal), 500, media_type=JSON)

        OPERATIONS.append(
            Operation(
                method=method,
                path="/api/v1" + path,
                name=handler.__name__,
                summary=(handler.__doc__ or handler.__name__).strip().splitlines()[0],
                status=status,
                body=body,
                response=response,
                query=query,
                tag=tag,
                auth=auth,
                endpoint=AsgiHandler(answer),
            )
        )
        return handler

    return register


_ANONYMOUS = Token(id="", org_id="", name="anonymous", created_at=0.0)


def respond(value: Any, status: int) -> Response:
    """A JSON response with an explicit status, for handlers whose status varies."""
    return Response(_encoder.encode(value), status, media_type=JSON)


def error_response(exc: errors.HooklineError) -> Response:
    return Response(_encoder.encode(exc.body()), exc.status, exc.headers(), media_type=JSON)


def hash_token(token: str) -> str:
    """Tokens are high-entropy random strings, so a plain SHA-256 is a sound at-rest hash."""
    return hashlib.sha256(token.encode()).hexdigest()


async def authenticate(services: Services, request: Request) -> Token:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise errors.Unauthorized("Missing or malformed Authorization header (Bearer <token>)")
    token = await services.tokens.lookup(value.strip())
    if token is None:
        raise errors.Unauthorized("Invalid token")
    return token


async def read_body(request: Request, limit: int) -> bytes:
    """Read the request body, refusing (413) anything above ``limit`` bytes before buffering it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLarge(f"Request body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"Request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode(raw: bytes, kind: type[T]) -> T:
    """Decode and validate a JSON body: syntax errors → 400, shape errors → 422 with a location."""
    if not raw.strip():
        raise errors.ValidationFailed(["body"], "A JSON body is required", "missing")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        message, _, where = text.partition(" - at ")
        match = _LOC.search(where) if where else None
        loc: list[str | int] = ["body"]
        if match:
            loc.extend(_split_path(match.group(1)))
        raise errors.ValidationFailed(loc, message) from exc
    except msgspec.DecodeError as exc:
        raise errors.BadRequest(f"Malformed JSON body: {exc}") from exc


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in re.findall(r"\.([^.\[]+)|\[(\d+)\]|\[\"?(.*?)\"?\]", path):
        name, index, key = piece
        parts.append(name or (int(index) if index else key))
    return parts


def given_fields(body: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH body actually carries (UNSET ones left out; explicit nulls kept)."""
    return {
        f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not msgspec.UNSET
    }


def page(call: Call, *, descending: bool = False) -> Page:
    """Paging from ``limit`` (1..250, default 50), ``iterator`` and ``order`` query parameters."""
    raw_limit = call.query("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise errors.ValidationFailed(
                ["query", "limit"], f"limit must be an integer between 1 and {MAX_LIMIT}"
            )
        limit = int(raw_limit)
    order = call.query("order")
    if order is not None:
        if order not in ("ascending", "descending"):
            raise errors.ValidationFailed(["query", "order"], "order is ascending or descending")
        descending = order == "descending"
    return Page(limit=limit, after=call.query("iterator") or None, descending=descending)


def query_time(call: Call, name: str) -> float | None:
    value = call.query(name)
    if value is None:
        return None
    return parse_time(value, ["query", name])


def parse_time(value: str, loc: list[str | int]) -> float:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise errors.ValidationFailed(loc, "Expected an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso(ts: float) -> str:
    """Epoch seconds → RFC 3339 with milliseconds and a Z, as Svix answers."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ListResponse(msgspec.Struct, rename="camel", kw_only=True):
    data: list[Any]
    iterator: str | None
    prev_iterator: str | None
    done: bool


def listing(items: list[T], page_: Page, key: Callable[[T], str], out: Callable[[T], Any]) -> Any:
    """Build Svix's list envelope; ``iterator`` resumes after the last item returned."""
    return ListResponse(
        data=[out(i) for i in items],
        iterator=key(items[-1]) if items else page_.after,
        prev_iterator=key(items[0]) if items else None,
        done=len(items) < page_.limit,
    )
