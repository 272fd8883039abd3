"""OpenAI-style errors: every failure is ``{"error": {"message", "type", "param", "code"}}`` with a status that
says whose fault it was; malformed JSON and wrong types never reach a route as a 500."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

logger = logging.getLogger("st_backend.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error the client gets as a nested body. param: the field (``input[3]``); code: a stable short name."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers: dict | None = None
) -> Response:
    return Response(error_body(status, message, param, code), status, headers, media_type="application/json")


def field_path(loc: tuple) -> str | None:
    """("body", "input", 3) -> "input[3]"; the location pydantic gives, as a client would write it."""
    parts = [p for p in loc if p != "body"]
    path = ""
    for p in parts:
        if isinstance(p, int):
            path += f"[{p}]"
        elif not _union_tag(str(p)):
            path += f".{p}" if path else str(p)
    return path or None


def _union_tag(part: str) -> bool:
    # pydantic names the union member it tried ("str", "list[int]", "RerankDocument"): not a field of the request.
    return part in ("str", "int", "bool", "float") or any(ch in part for ch in "[]()-") or part[:1].isupper()


async def _api_error(request: Request, exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return error_response(400, f"The body is not valid JSON ({detail}); send a JSON object.", None, "invalid_json")
    param = field_path(tuple(first.get("loc", ())))
    # Union errors repeat per member: report the distinct messages, the first few only.
    messages = list(dict.fromkeys(f"{field_path(tuple(e.get('loc', ()))) or 'body'}: {e['msg']}" for e in errors))
    more = f" (and {len(messages) - 3} more)" if len(messages) > 3 else ""
    message = "Invalid request: " + "; ".join(messages[:3]) + more + ". See the schema at /openapi.json."
    return error_response(422, message, param, "invalid_type" if "type" in first.get("type", "") else "invalid_value")


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        message = f"No route {request.method} {request.url.path}; see /docs or /openapi.json for the routes."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # FastAPI's own words
        message = "The body could not be parsed as JSON (not UTF-8, or nested too deeply); send a JSON object."
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, None, None, getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> Response:
    return Response(unexpected_body(request.url.path, exc), 500, media_type="application/json")


def unexpected_body(path: str, exc: Exception) -> bytes:
    """Log an error no handler expected (with its traceback) and the 500 body the client gets for it."""
    logger.exception("st_backend server: unexpected error on %s", path)
    return error_body(500, f"Internal error ({type(exc).__name__}: {exc}); the server keeps running.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
