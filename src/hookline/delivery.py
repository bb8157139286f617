"""Delivery of one claimed task as typed stages: prepare → send → classify.

``prepare`` and ``classify`` are pure (clock and randomness are arguments); ``send`` is the only
stage with I/O and receives its aiohttp session. The worker strings them together.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
import msgspec
import yarl

import hookline
from hookline import egress, ids, retry, signing
from hookline.models import Attempt, Claim, Completion, MessageStatus

RESPONSE_BODY_LIMIT = 20_000  # bytes of the receiver's answer kept on the attempt
USER_AGENT = f"hookline/{hookline.__version__}"


class Unpreparable(Exception):
    """The stored task cannot be turned into a request; ``str()`` says why, without secrets."""


@dataclass(frozen=True, slots=True)
class Request:
    url: str
    headers: Mapping[str, str]
    body: bytes


class Failure(enum.Enum):
    """Why no HTTP answer came back; the values are the metrics' attempt outcome labels.

    Set by ``send`` from the exception it caught, so that nobody parses ``Response.error``.
    """

    EGRESS_REFUSED = "egress_refused"  # the egress guard refused the address
    TIMEOUT = "timeout"  # no whole answer within request_timeout
    CONNECT_ERROR = "connect_error"  # refused, reset, DNS failure, bad URL, broken answer


@dataclass(frozen=True, slots=True)
class Response:
    """What came back: ``status`` 0 means no HTTP answer (``error`` says why, ``failure``
    what kind of failure it was)."""

    status: int
    body: str
    retry_after: str | None
    duration_ms: int
    error: str | None = None
    failure: Failure | None = None
    seconds: float = 0.0  # duration_ms unrounded, for the duration histogram


def prepare(claim: Claim, now: float, trace: Mapping[str, str] | None = None) -> Request:
    """Build the signed request: Standard Webhooks headers, Svix aliases, custom headers.

    ``trace`` (``traceparent`` and the like, when tracing is on) is sent too, over a custom
    header of the same name; the signature covers the body, id and timestamp, not headers.
    Raises ``Unpreparable`` when a stored signing secret cannot be decoded.
    """
    msg, endpoint = claim.message, claim.endpoint
    timestamp = int(now)
    try:
        keys = [_secret(k.secret) for k in endpoint.keys if k.active(now)]
    except ValueError:
        # the decoder's message is safe today, but the attempt is shown to the tenant: keep
        # anything derived from the secret out of it
        raise Unpreparable("the endpoint's signing secret cannot be decoded") from None
    signature = signing.signature_header(keys, msg.id, timestamp, msg.payload)
    stamp = str(timestamp)
    headers = {
        **endpoint.headers,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg.id,
        "webhook-timestamp": stamp,
        "webhook-signature": signature,
        "svix-id": msg.id,
        "svix-timestamp": stamp,
        "svix-signature": signature,
    }
    if trace is not None:
        headers.update(trace)
    return Request(url=endpoint.url, headers=headers, body=msg.payload)


async def send(
    session: aiohttp.ClientSession,
    request: Request,
    *,
    timeout_seconds: float,
    policy: egress.EgressPolicy,
    clock: Callable[[], float] = time.perf_counter,
) -> Response:
    """POST once; never follows redirects; never raises for a network or egress failure."""
    started = clock()

    def took() -> float:
        return clock() - started

    try:
        url = _url(request.url)
        # checked on the parsed URL aiohttp connects to, not on a second parse of the text
        policy.check_host_literal(url.raw_host or "")
        async with session.post(
            url,
            data=request.body,
            headers=request.headers,
            allow_redirects=False,
            timeout=_timeout(timeout_seconds),
        ) as resp:
            raw = await resp.content.read(RESPONSE_BODY_LIMIT)
            seconds = took()
            return Response(
                status=resp.status,
                body=raw.decode("utf-8", "replace"),
                retry_after=resp.headers.get("retry-after"),
                duration_ms=int(seconds * 1000),
                seconds=seconds,
            )
    except egress.EgressRefused as exc:
        return _failed(took(), str(exc), Failure.EGRESS_REFUSED)
    except TimeoutError:  # also aiohttp's connect and read timeouts, which subclass it
        return _failed(took(), f"timed out after {timeout_seconds:g} s", Failure.TIMEOUT)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        refused = _refusal(exc)
        if refused is not None:  # the guarded resolver refused every address of the host
            return _failed(took(), str(refused), Failure.EGRESS_REFUSED)
        return _failed(took(), _describe(exc), Failure.CONNECT_ERROR)


def _failed(seconds: float, error: str, failure: Failure) -> Response:
    return Response(
        status=0,
        body="",
        retry_after=None,
        duration_ms=int(seconds * 1000),
        error=error,
        failure=failure,
        seconds=seconds,
    )


# Endpoints are few and their URLs and secrets repeat on every delivery: parse each once.
@functools.lru_cache(maxsize=4096)
def _url(url: str) -> yarl.URL:
    return yarl.URL(url)


@functools.lru_cache(maxsize=4096)
def _secret(secret: str) -> bytes:
    return signing.decode_secret(secret)


@functools.lru_cache(maxsize=16)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def _refusal(exc: BaseException) -> egress.EgressRefused | None:
    """The guard's refusal that ``exc`` wraps (aiohttp wraps what the resolver raised)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, egress.EgressRefused):
            return cause
        cause = cause.__cause__ or getattr(cause, "os_error", None)
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def classify(
    claim: Claim,
    request: Request,
    response: Response,
    *,
    schedule: tuple[float, ...],
    now: float,
    rand: Callable[[], float],
    attempt_id: str | None = None,
) -> Completion:
    """Turn a response into the attempt record and the task's next state.

    ``attempt_id`` is the id the worker chose before sending (so that its log lines carry it);
    a new one is made without it.
    """
    attempt_no = claim.attempts + 1
    decision = retry.decide(
        schedule=schedule,
        attempt=attempt_no,
        status=response.status,
        retry_after=response.retry_after,
        now=now,
        rand=rand,
    )
    succeeded = decision.outcome is retry.Outcome.SUCCESS
    attempt = Attempt(
        id=attempt_id if attempt_id is not None else ids.new(ids.ATTEMPT),
        msg_id=claim.message.id,
        endpoint_id=claim.endpoint.id,
        app_id=claim.message.app_id,
        url=request.url,
        status=MessageStatus.SUCCESS if succeeded else MessageStatus.FAIL,
        response_status_code=response.status,
        response=response.error if response.error is not None else response.body,
        duration_ms=response.duration_ms,
        trigger=claim.trigger,
        created_at=now,
    )
    if decision.outcome is retry.Outcome.RETRY:
        next_status, next_at = MessageStatus.PENDING, decision.next_at(now)
    elif succeeded:
        next_status, next_at = MessageStatus.SUCCESS, None
    else:
        next_status, next_at = MessageStatus.FAIL, None
    return Completion(
        attempt=attempt,
        lease=claim.lease,
        next_status=next_status,
        next_attempt_at=next_at,
        disable_endpoint=decision.outcome is retry.Outcome.DISABLE,
        attempt_number=attempt_no,
    )


def not_sent(
    claim: Claim,
    error: str,
    *,
    schedule: tuple[float, ...],
    now: float,
    rand: Callable[[], float],
    attempt_id: str | None = None,
) -> Completion:
    """The failed attempt for a task that could not be sent at all (``prepare`` raised).

    Recorded like a transport error (status code 0, ``error`` as the response text) and
    retried on ``schedule`` like any other failure, so a task that can never be prepared
    exhausts its attempts instead of coming back every lease period without a trace.
    """
    request = Request(url=claim.endpoint.url, headers={}, body=b"")
    response = Response(status=0, body="", retry_after=None, duration_ms=0, error=error)
    return classify(
        claim, request, response, schedule=schedule, now=now, rand=rand, attempt_id=attempt_id
    )


def new_session(policy: egress.EgressPolicy, limit: int) -> aiohttp.ClientSession:
    """The one pooled session a worker uses: guarded DNS, no cookies, bounded connections."""
    connector = aiohttp.TCPConnector(
        resolver=egress.GuardedResolver(policy),
        limit=limit,
        limit_per_host=0,
        ttl_dns_cache=60,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        json_serialize=lambda v: msgspec.json.encode(v).decode(),
        auto_decompress=True,
    )
