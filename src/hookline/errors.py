"""One exception tree for everything the API can answer with, other than a bug's 500.

    HooklineError (code, detail, status, headers())
    ├── NotFound            404  not_found
    ├── Conflict            409  conflict
    ├── ValidationFailed    422  validation      (detail is a list of {loc, msg, type})
    ├── IdempotencyMismatch 409  idempotency_key_mismatch
    ├── PayloadTooLarge     413  payload_too_large
    ├── ClientGone          400  client_disconnected (nobody reads it)
    ├── Unauthorized        401  authentication_failed
    ├── BadRequest          400  bad_request
    │   └── PayloadMissing  400  missing_payload (resending a message whose payload expired)
    └── RetryLater                               (retry_after seconds → a Retry-After header)
        ├── Unavailable     503  unavailable     (the store cannot accept writes right now)
        └── TooManyRequests 429  too_many_requests

The API turns any of these into a Svix-shaped body ``{"code": ..., "detail": ...}`` with the
error's ``headers()``; anything else is a bug and answers 500 with a generic body.
"""

from __future__ import annotations

from typing import Any


class HooklineError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail: Any = None) -> None:
        super().__init__(detail)
        self.detail: Any = detail if detail is not None else self.code

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail}

    def headers(self) -> dict[str, str]:
        """Response headers that go with this error (none unless a subclass says so)."""
        return {}


class BadRequest(HooklineError):
    pass


class PayloadMissing(BadRequest):
    """The message's payload is gone (its retention period ended), so it cannot be sent again.

    Svix's server answers a resend of such a message with this status, code and detail.
    """

    code = "missing_payload"

    def __init__(
        self, detail: Any = "Unable to resend message. Payload is missing (probably expired)."
    ) -> None:
        super().__init__(detail)


class NotFound(HooklineError):
    status = 404
    code = "not_found"

    def __init__(self, detail: Any = "Entity not found") -> None:
        super().__init__(detail)


class Conflict(HooklineError):
    status = 409
    code = "conflict"


class Unauthorized(HooklineError):
    status = 401
    code = "authentication_failed"


class PayloadTooLarge(HooklineError):
    status = 413
    code = "payload_too_large"

    def __init__(self, detail: Any = None, *, close: bool = False) -> None:
        super().__init__(detail)
        self.close = close  # the rest of the body was not read: the connection must go

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"} if self.close else {}


class ClientGone(HooklineError):
    """The client disconnected before its request was read; the answer reaches nobody."""

    status = 400
    code = "client_disconnected"


class IdempotencyMismatch(HooklineError):
    """An idempotency key reused for another request.

    409, not 422: the Svix API and its SDKs reserve 422 for ``HTTPValidationError`` (``detail``
    a list of ``{loc, msg, type}``), and the svix SDK parses every 422 that way, so a string
    ``detail`` crashed it. A 409 is raised as ``svix.exceptions.HttpError`` with
    ``status_code`` and ``code`` readable.
    """

    status = 409
    code = "idempotency_key_mismatch"


class ValidationFailed(HooklineError):
    status = 422
    code = "validation"

    def __init__(self, loc: list[str | int], msg: str, type_: str = "value_error") -> None:
        super().__init__([{"loc": loc, "msg": msg, "type": type_}])


class RetryLater(HooklineError):
    """A refusal the client should retry, no sooner than ``retry_after`` seconds from now."""

    def __init__(self, detail: Any = None, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(RetryLater):
    status = 503
    code = "unavailable"  # the same code the health check's 503 answers with


class TooManyRequests(RetryLater):
    status = 429
    code = "too_many_requests"
