"""One exception tree for everything the API can answer with a 4xx.

    HooklineError (code, detail, status)
    ├── NotFound            404  not_found
    ├── Conflict            409  conflict
    ├── ValidationFailed    422  validation      (detail is a list of {loc, msg, type})
    ├── IdempotencyMismatch 422  idempotency_key_mismatch
    ├── PayloadTooLarge     413  payload_too_large
    ├── Unauthorized        401  authentication_failed
    └── BadRequest          400  bad_request

The API turns any of these into a Svix-shaped body ``{"code": ..., "detail": ...}``; anything
else is a bug and answers 500 with a generic body.
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


class BadRequest(HooklineError):
    pass


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


class IdempotencyMismatch(HooklineError):
    status = 422
    code = "idempotency_key_mismatch"


class ValidationFailed(HooklineError):
    status = 422
    code = "validation"

    def __init__(self, loc: list[str | int], msg: str, type_: str = "value_error") -> None:
        super().__init__([{"loc": loc, "msg": msg, "type": type_}])
