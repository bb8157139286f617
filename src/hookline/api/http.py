"""The HTTP seam shared by every resource module: routing, auth, bodies, errors, paging.

Each handler is declared with ``@route(...)``, which records what the OpenAPI document needs
(method, path, body and response types, status) and wraps the handler so that it receives an
authenticated ``Call`` and a decoded, validated body, and returns a msgspec Struct (or None).
Errors anywhere become Svix-shaped ``{"code", "detail"}`` bodies; nothing a client sends can
produce a 5xx.
"""

from __future__ import annotations

import array
import hashlib
import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hookline import errors, logs
from hookline.api import idempotency, observe
from hookline.models import Page, Token

if TYPE_CHECKING:
    from hookline.api.services import Services

T = TypeVar("T")
U = TypeVar("U")
MAX_LIMIT = 250
DISCARD_BYTES = 128 * 1024 * 1024  # an oversized body is read and dropped up to this size
DEFAULT_LIMIT = 50
JSON = "application/json"
# Levels of ``[``/``{`` a request body may nest, its outer object counted. msgspec decodes
# recursively and fails with a RecursionError (a 500) somewhere near Python's recursion limit,
# which depends on how deep the stack already is; a fixed, documented limit well below that
# makes the answer a predictable 400. 128 is serde_json's default limit, the parser the Svix
# server uses, so a payload Svix accepts is not refused here for its depth.
MAX_JSON_DEPTH = 128
# Digits an integer query parameter may have: more than any bound the API checks, and far below
# the 4,300 digits past which int() raises ValueError.
MAX_INT_DIGITS = 9

# Path parameters bound as context variables for the request's log lines (keep in step with
# the field names in logs.py's docstring).
CONTEXT_IDS = ("app_id", "endpoint_id", "msg_id", "attempt_id")

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
    also: tuple[int, ...]  # other success statuses it can answer with
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
    also: tuple[int, ...] = (),
    body: type[Any] | None = None,
    response: Any = None,
    query: tuple[str, ...] = (),
    tag: str = "",
    auth: bool = True,
    prefix: str = "/api/v1",
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Declare an API operation at ``prefix + path``; see the module docstring.

    Everything is under ``/api/v1`` but the probes that load balancers call (``/health/...``).
    """

    template = prefix + path
    ids = tuple(name for name in CONTEXT_IDS if "{" + name + "}" in path)

    def register(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def answer(request: Request) -> Response:
            services: Services = request.app.state.services
            if ids:
                params = request.path_params
                structlog.contextvars.bind_contextvars(**{name: params[name] for name in ids})
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
                if exc.status in (429, 503):
                    refusals: observe.Refusals = request.app.state.refusals
                    refusals.note(exc, template)
                return error_response(exc)
            except Exception:
                # A bug, not the client's doing: log it and answer in the API's shape rather than
                # Starlette's plain-text 500. The request id (X-Request-Id, added to every
                # answer by api._IngestFirst) ties the client's answer to the logged traceback.
                log.exception("request_failed", method=method, route=template)
                request_id = structlog.contextvars.get_contextvars().get("request_id", "")
                internal = {
                    "code": "internal_error",
                    "detail": f"Internal server error (request id {request_id})",
                }
                return Response(_encoder.encode(internal), 500, media_type=JSON)

        OPERATIONS.append(
            Operation(
                method=method,
                path=template,
                name=handler.__name__,
                summary=(handler.__doc__ or handler.__name__).strip().splitlines()[0],
                status=status,
                also=also,
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
    """The caller's token, or 401; each refusal is logged (``auth_failed``, never the token)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        _auth_failed(services, "missing" if not header else "malformed")
        raise errors.Unauthorized("Missing or malformed Authorization header (Bearer <token>)")
    token = await services.tokens.lookup(value.strip())
    if token is None:
        _auth_failed(services, "unknown_token")  # unknown, or revoked
        raise errors.Unauthorized("Invalid token")
    return token


def _auth_failed(services: Services, reason: str) -> None:
    # One line per second and reason, with the count: a token-guessing flood must not flood the
    # log (or fill the disk) at the rate it sends requests.
    throttle = services.auth_failures.get(reason)
    if throttle is None:
        throttle = services.auth_failures[reason] = logs.Throttle(1.0)
    count = throttle.hit()
    if count:
        log.info("auth_failed", reason=reason, count=count)


async def read_body(request: Request, limit: int) -> bytes:
    """Read the request body, refusing (413) anything above ``limit`` bytes without keeping it.

    An oversized body is read and dropped, up to ``DISCARD_BYTES``, before the 413 is sent:
    clients that send the whole body before reading the answer (Python's urllib among them)
    would otherwise see the connection reset instead of the 413. Beyond that, or when the
    declared length is beyond it, the answer goes at once and the connection is closed. The
    time all this may take is bounded by ``Settings.request_read_timeout``.
    """
    declared = request.headers.get("content-length")
    length = (
        int(declared)
        if declared is not None and declared.isascii() and declared.isdigit()
        else None
    )
    if length is not None and length > DISCARD_BYTES:
        raise errors.PayloadTooLarge(f"Request body exceeds {limit} bytes", close=True)
    too_large = length is not None and length > limit
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if too_large or size > limit:
                too_large = True
                chunks = []
                if size > DISCARD_BYTES:
                    raise errors.PayloadTooLarge(f"Request body exceeds {limit} bytes", close=True)
                continue
            chunks.append(chunk)
    except ClientDisconnect:
        # the client left (or was cut off for sending too slowly): nobody reads an answer
        raise errors.ClientGone() from None
    if too_large:
        raise errors.PayloadTooLarge(f"Request body exceeds {limit} bytes")
    return b"".join(chunks)


def decode(raw: bytes, kind: type[T]) -> T:
    """Decode and validate a JSON body: syntax errors → 400, shape errors → 422 with a location.

    The body must be JSON text per RFC 8259 as a whole, including the parts msgspec only skips
    over (``msgspec.Raw`` fields such as a message payload, unknown fields): UTF-8 only, no lone
    surrogate escapes (msgspec refuses those itself), at most ``MAX_JSON_DEPTH`` levels deep.
    """
    if not raw.strip():
        raise errors.ValidationFailed(["body"], "A JSON body is required", "missing")
    check_json_text(raw)
    try:
        value = msgspec.json.decode(raw, type=kind)
    except RecursionError:
        # check_json_text bounds the depth first; this only backs it up
        raise errors.BadRequest(
            f"Malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    except msgspec.ValidationError as exc:
        # A validation error can stop msgspec before it reaches a bad escape further on; the
        # body is malformed first of all, so that is the answer.
        if b"\\u" in raw and (at := lone_surrogate(raw)) is not None:
            raise errors.BadRequest(
                f"Malformed JSON body: lone UTF-16 surrogate escape at byte {at}"
            ) from exc
        text = str(exc)
        message, _, where = text.partition(" - at ")
        match = _LOC.search(where) if where else None
        loc: list[str | int] = ["body"]
        if match:
            loc.extend(_split_path(match.group(1)))
        raise errors.ValidationFailed(loc, message) from exc
    except msgspec.DecodeError as exc:
        if (at := lone_surrogate(raw)) is not None:  # msgspec may call this "truncated"
            raise errors.BadRequest(
                f"Malformed JSON body: lone UTF-16 surrogate escape at byte {at}"
            ) from exc
        raise errors.BadRequest(f"Malformed JSON body: {exc}") from exc
    for attr, wire in getattr(kind, "unsupported", ()):
        if getattr(value, attr) is not None:
            raise errors.ValidationFailed(["body", wire], f"{wire} is not supported by hookline")
    return value


# A JSON string with its escapes already removed, from its opening quote to its closing one or
# to the end of an unterminated text: every attempt matches, so the scan stays linear.
_JSON_STRING = re.compile(rb'"[^"]*(?:"|\Z)')
# Brackets become +1 / -1 (as signed bytes); every other byte is deleted.
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")
_DEPTH_CHUNK = 4096  # brackets summed per step of nests_deeper


def check_json_text(raw: bytes) -> None:
    """400 unless ``raw`` is UTF-8 and nests at most ``MAX_JSON_DEPTH`` levels.

    Costs well under a microsecond on a typical body: ``isascii`` and two ``count`` calls, all
    in C. Only a body with more than ``MAX_JSON_DEPTH`` brackets in all gets the exact scan.
    """
    if not raw.isascii():
        try:
            raw.decode("utf-8")  # strict: refuses overlong forms, encoded surrogates, > U+10FFFF
        except UnicodeDecodeError as exc:
            raise errors.BadRequest(
                f"Malformed JSON body: invalid UTF-8 at byte {exc.start}"
            ) from None
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return  # cannot nest deeper than it has brackets
    if nests_deeper(raw, MAX_JSON_DEPTH):
        raise errors.BadRequest(f"Malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels")


def nests_deeper(raw: bytes, limit: int) -> bool:
    """Whether ``raw`` nests arrays and objects more than ``limit`` levels deep.

    Brackets inside strings do not count. The running depth is summed in C, a chunk at a time,
    so that hostile input (all brackets up front) is refused after the first chunk.
    """
    # Escaped backslashes first, then escaped quotes: left to right, as a JSON parser reads them.
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    steps = _JSON_STRING.sub(b"", unescaped).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    depth = 0
    for start in range(0, len(steps), _DEPTH_CHUNK):
        chunk = array.array("b", steps[start : start + _DEPTH_CHUNK])
        if max(itertools.accumulate(chunk, initial=depth)) > limit:
            return True
        depth += sum(chunk)
    return False


_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


def lone_surrogate(raw: bytes) -> int | None:
    """The offset of the first ``\\uD800``-``\\uDFFF`` escape that is not half of a pair, if any.

    Only called for a body msgspec already refused, to name the problem.
    """
    high_at = high_end = -1
    for m in _ESCAPE.finditer(raw):
        unit = int(m.group(1), 16) if m.group(1) else -1
        if high_at >= 0 and not (m.start() == high_end and 0xDC00 <= unit <= 0xDFFF):
            return high_at
        if 0xDC00 <= unit <= 0xDFFF and high_at < 0:
            return m.start()
        high_at, high_end = (m.start(), m.end()) if 0xD800 <= unit <= 0xDBFF else (-1, -1)
    return high_at if high_at >= 0 else None


def query_int(call: Call, name: str, low: int, high: int) -> int | None:
    """The integer query parameter ``name`` (ASCII digits, ``low``..``high``), None if absent."""
    value = call.query(name)
    if value is None:
        return None
    number = strict_int(value)
    if number is None or not low <= number <= high:
        raise errors.ValidationFailed(
            ["query", name], f"{name} must be an integer between {low} and {high}"
        )
    return number


def query_bool(call: Call, name: str, default: bool) -> bool:
    """The boolean query parameter ``name``: ``true`` or ``false`` as documented, else 422."""
    value = call.query(name)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise errors.ValidationFailed(["query", name], f"{name} must be true or false")
    return value == "true"


def strict_int(value: str) -> int | None:
    """``value`` as a non-negative int if it is 1 to ``MAX_INT_DIGITS`` ASCII digits, else None.

    ``str.isdigit`` alone accepts digits ``int()`` refuses (``"³"``) and others it reads
    (Arabic-Indic, full-width); neither belongs in a URL the API documents.
    """
    if len(value) <= MAX_INT_DIGITS and value.isascii() and value.isdigit():
        return int(value)
    return None


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in re.findall(r"\.([^.\[]+)|\[(\d+)\]|\[\"?(.*?)\"?\]", path):
        name, index, key = piece
        parts.append(name or (int(index) if index else key))
    return parts


def given_fields(body: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH body actually carries (UNSET ones left out; explicit nulls kept).

    ``unsupported`` fields are left out too: decode has refused any value but null for them.
    """
    skip = {attr for attr, _ in getattr(body, "unsupported", ())}
    return {
        f: getattr(body, f)
        for f in body.__struct_fields__
        if f not in skip and getattr(body, f) is not msgspec.UNSET
    }


def page(call: Call, *, descending: bool = False) -> Page:
    """Paging from ``limit`` (1..250, default 50), ``iterator`` and ``order`` query parameters."""
    limit = query_int(call, "limit", 1, MAX_LIMIT)
    order = call.query("order")
    if order is not None:
        if order not in ("ascending", "descending"):
            raise errors.ValidationFailed(["query", "order"], "order is ascending or descending")
        descending = order == "descending"
    return Page(
        limit=DEFAULT_LIMIT if limit is None else limit,
        after=call.query("iterator") or None,
        descending=descending,
    )


def query_time(call: Call, name: str) -> float | None:
    value = call.query(name)
    if value is None:
        return None
    return parse_time(value, ["query", name])


# RFC 3339's date-time, the document's format: an offset is required (as the Svix server does).
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_time(value: str, loc: list[str | int]) -> float:
    """An RFC 3339 date-time (``2026-12-02T05:45:00Z``, ``…+01:00``) as epoch seconds, else 422."""
    if _RFC3339.fullmatch(value):
        try:
            return datetime.fromisoformat(
                value[:-1] + "+00:00" if value[-1] in "Zz" else value
            ).timestamp()
        except ValueError:
            pass  # the right shape, not a real time (month 13, 25:00)
    raise errors.ValidationFailed(
        loc, "Expected an RFC 3339 date-time with an offset (Z or +hh:mm)"
    )


def iso(ts: float) -> str:
    """Epoch seconds → RFC 3339 with milliseconds and a Z, as Svix answers."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ListResponse(msgspec.Struct, Generic[T], rename="camel", kw_only=True):
    """Svix's list envelope; ``ListResponse[EndpointOut]`` names the item type for the document."""

    data: list[T]
    iterator: str | None
    prev_iterator: str | None
    done: bool


def listing(
    items: list[U], page_: Page, key: Callable[[U], str], out: Callable[[U], T]
) -> ListResponse[T]:
    """Build Svix's list envelope; ``iterator`` resumes after the last item returned."""
    return ListResponse(
        data=[out(i) for i in items],
        iterator=key(items[-1]) if items else page_.after,
        prev_iterator=key(items[0]) if items else None,
        done=len(items) < page_.limit,
    )
