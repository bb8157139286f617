"""The OpenAPI document, generated from the ``@route`` declarations and the msgspec schemas."""

from __future__ import annotations

import re
from typing import Any

import msgspec

import hookline
from hookline.api import http

REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{([a-z_]+)}")
ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "detail"],
    "properties": {"code": {"type": "string"}, "detail": {}},
}


def document() -> dict[str, Any]:
    """Build the OpenAPI 3.1 document for every registered operation."""
    types = sorted(
        {t for op in http.OPERATIONS for t in (op.body, op.response) if t is not None},
        key=lambda t: t.__name__,
    )
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    by_type = dict(zip(types, schemas, strict=True))
    components["HttpErrorOut"] = ERROR_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    for op in http.OPERATIONS:
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(op.path)
        ]
        params += [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
            for name in op.query
        ]
        if op.method == "POST" and op.auth:
            params.append({"name": "idempotency-key", "in": "header", "schema": {"type": "string"}})
        ok: dict[str, Any] = {"description": "OK"}
        if op.response is not None:
            ok["content"] = {"application/json": {"schema": by_type[op.response]}}
        error = {
            "content": {"application/json": {"schema": {"$ref": REF.format(name="HttpErrorOut")}}}
        }
        entry: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "tags": [op.tag] if op.tag else [],
            "parameters": params,
            "responses": {
                str(op.status): ok,
                "4XX": {"description": "Client error", **error},
            },
        }
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


def encoded() -> bytes:
    return msgspec.json.encode(document())
