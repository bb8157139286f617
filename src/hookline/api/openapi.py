"""The OpenAPI document, generated from the ``@route`` declarations and the msgspec schemas.

It is meant to describe exactly what the server takes and answers, so that a fuzzer run over it
(``tests/acceptance/test_openapi_fuzz.py``) can tell a server bug from a gap in the document:
typed query parameters, the real bodies (unknown fields refused), every status an operation can
answer and the headers that go with it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

import hookline
from hookline.api import http, idempotency
from hookline.api.schemas import NAME_PATTERN
from hookline.models import MessageStatus

REF = "#/components/schemas/{name}"
JSON = "application/json"
_PATH_PARAM = re.compile(r"{([a-z_]+)}")
_DATE_TIME = {"type": "string", "format": "date-time"}
_BOOLEAN = {"type": "boolean"}

# Every query parameter any route reads, with what the server accepts for it. A route naming a
# parameter missing here fails the document's build (and so the test suite).
QUERY: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": http.MAX_LIMIT},
    "iterator": {"type": "string"},
    "order": {"type": "string", "enum": ["ascending", "descending"]},
    "with_content": _BOOLEAN,
    "get_if_exists": _BOOLEAN,
    "include_archived": _BOOLEAN,
    "before": _DATE_TIME,
    "after": _DATE_TIME,
    "since": _DATE_TIME,
    "until": _DATE_TIME,
    "status": {"type": "integer", "enum": [int(s) for s in MessageStatus]},
    "status_code_class": {"type": "integer", "enum": [0, 100, 200, 300, 400, 500]},
    "channel": {"type": "string"},
    "tag": {"type": "string"},
    "endpoint_id": {"type": "string"},
    # repeated (event_types=a&event_types=b), or comma-separated in one value as the SDK sends
    "event_types": {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": NAME_PATTERN},
    },
}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "detail"],
    "properties": {"code": {"type": "string"}, "detail": {"type": "string"}},
}
# Svix's HTTPValidationError, with hookline's code beside it.
VALIDATION_SCHEMA = {
    "type": "object",
    "required": ["code", "detail"],
    "properties": {
        "code": {"type": "string", "const": "validation"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
_ERRORS = {
    400: "Malformed request body (not JSON text, invalid UTF-8, nested too deep), or a resend "
    "of a message whose payload expired (missing_payload)",
    401: "Missing or invalid token",
    404: "No such entity for this token",
    409: "Conflicts with an existing entity, or an idempotency key in use or reused",
    413: "Request body too large",
    422: "Request failed validation",
    429: "Too much work waiting; retry after Retry-After seconds",
    503: "Cannot accept this now (store unavailable, or too busy); retry after Retry-After",
}


def document() -> dict[str, Any]:
    """Build the OpenAPI 3.1 document for every registered operation."""
    types = sorted(
        {t for op in http.OPERATIONS for t in (op.body, op.response) if t is not None},
        key=_type_name,
    )
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    by_type = dict(zip(types, schemas, strict=True))
    components["HttpErrorOut"] = ERROR_SCHEMA
    components["HTTPValidationError"] = VALIDATION_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for op in http.OPERATIONS:
        path_params = _PATH_PARAM.findall(op.path)
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in path_params
        ]
        params += [
            {"name": name, "in": "query", "required": False, "schema": QUERY[name]}
            for name in op.query
        ]
        if op.method == "POST" and op.auth:
            params.append(
                {
                    "name": "idempotency-key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": idempotency.MAX_KEY_LENGTH},
                }
            )
        entry: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "tags": [op.tag] if op.tag else [],
            "parameters": params,
            "responses": _responses(op, by_type, bool(path_params)),
        }
        links = _links(op)
        if links:
            entry["responses"][str(op.status)]["links"] = links
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[op.body]}},
            }
        if op.auth:
            entry["security"] = [{"HTTPBearer": []}]
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "hookline API", "version": hookline.__version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _responses(op: http.Operation, by_type: dict[Any, Any], has_path: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in (op.status, *op.also):
        ok: dict[str, Any] = {"description": "OK"}
        if op.response is not None and status != 204:
            ok["content"] = {"application/json": {"schema": by_type[op.response]}}
        responses[str(status)] = ok
    writes = op.method in ("POST", "PUT", "PATCH")
    statuses = [413, 503]
    if op.body is not None or op.name == "resend":  # resend: missing_payload (expired)
        statuses.append(400)
    if op.auth:
        statuses.append(401)
    if has_path:
        statuses.append(404)
    if op.auth and writes:
        statuses.append(409)
    if op.body is not None or op.query or (op.method == "POST" and op.auth):
        statuses.append(422)  # a body, a query parameter or the idempotency-key header
    if op.name == "create_message":
        statuses.append(429)
    for status in sorted(statuses):
        name = "HTTPValidationError" if status == 422 else "HttpErrorOut"
        answer: dict[str, Any] = {
            "description": _ERRORS[status],
            "content": {"application/json": {"schema": {"$ref": REF.format(name=name)}}},
        }
        if status in (429, 503):
            answer["headers"] = _RETRY_AFTER
        own = responses.get(str(status), {}).get("content")
        if own is not None:  # a status the operation answers with its own body too (readiness)
            error = answer["content"]["application/json"]["schema"]
            answer["content"] = {
                "application/json": {"schema": {"anyOf": [own[JSON]["schema"], error]}}
            }
            answer["description"] = f"The operation's own answer, or: {_ERRORS[status]}"
        responses[str(status)] = answer
    return responses


def _links(op: http.Operation) -> dict[str, Any]:
    """For a create operation, links to the operations on what it created (OpenAPI links).

    ``POST /app/{app_id}/endpoint`` answers an endpoint whose ``id`` fills ``{endpoint_id}`` of
    every operation under ``/app/{app_id}/endpoint/{endpoint_id}`` whose other path parameters
    the create request already had. Clients and fuzzers follow them from a create to its uses.
    """
    if op.method != "POST" or op.response is None:
        return {}
    fields = getattr(op.response, "__struct_encode_fields__", ())
    key = "id" if "id" in fields else "name" if "name" in fields else None
    if key is None:
        return {}
    known = set(_PATH_PARAM.findall(op.path))
    links: dict[str, Any] = {}
    for target in http.OPERATIONS:
        rest = target.path.removeprefix(op.path + "/")
        if rest == target.path or not rest.startswith("{"):
            continue
        created = rest[1 : rest.index("}")]
        needed = set(_PATH_PARAM.findall(target.path))
        if needed - known != {created}:
            continue
        parameters = {name: f"$request.path.{name}" for name in sorted(needed & known)}
        parameters[created] = f"$response.body#/{key}"
        links[target.name] = {"operationId": target.name, "parameters": parameters}
    return links


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or repr(kind)


def encoded() -> bytes:
    return msgspec.json.encode(document())
