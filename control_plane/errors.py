"""RFC 9457 problem+json answers for every error the API gives."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
)
from sqlalchemy.exc import DataError, IntegrityError

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger("control_plane.errors")

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class FieldError(ValidationException):
    """A 422 naming one or more fields: ``FieldError(("name", "already taken"), ...)``."""

    def __init__(self, *errors: tuple[str, str], detail: str = "Validation failed") -> None:
        super().__init__(detail=detail, extra=[{"field": f, "message": m} for f, m in errors])


class Conflict(HTTPException):
    status_code = HTTP_409_CONFLICT


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")
_AT_PATH = re.compile(r"at `\$\.?([^`]*)`")


def _field_from_message(message: str) -> str:
    """msgspec names the body field inside its message ("Object missing required field `name` - at
    `$.settings`"); Litestar reports it as the whole body ("data"). Recover the dotted field path."""
    path = _AT_PATH.search(message)
    named = _NAMED_FIELD.search(message)
    parts = [p for p in ((path.group(1) if path else ""), (named.group(1) if named else "")) if p]
    return ".".join(parts)


def _field_errors(extra: Any) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    for item in extra if isinstance(extra, list) else []:
        if not isinstance(item, dict):
            continue
        field = str(item.get("field") or item.get("key") or "")
        message = str(item.get("message", "invalid value"))
        if field in ("", "data"):
            field = _field_from_message(message) or field
        errors.append({"field": field, "message": message})
    return errors


def handle_validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    errors = _field_errors(exc.extra)
    detail = exc.detail if not errors else "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(HTTP_422_UNPROCESSABLE_ENTITY, detail, errors=errors)


def handle_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if exc.status_code == 400 and exc.extra:
        # Litestar reports a body that does not decode/convert as 400; SPEC says 422 naming the field.
        return handle_validation(_, ValidationException(detail=exc.detail, extra=exc.extra))
    return problem(exc.status_code, exc.detail, headers=exc.headers)


def handle_integrity(_: Request[Any, Any, Any], exc: IntegrityError) -> Response[dict[str, Any]]:
    log.info("integrity_conflict", error=str(exc.orig).splitlines()[0] if exc.orig else "")
    return problem(HTTP_409_CONFLICT, "The change conflicts with existing data (a duplicate or a reference).")


def handle_data_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """The last resort for a value PostgreSQL refuses (out of a column's range, a NUL in text) that no
    edge check caught: the client's input, so a 422, logged for the missing check, never a 500."""
    orig = getattr(exc, "orig", None) or exc
    log.warning(
        "data_error",
        path=request.url.path,
        method=request.method,
        error=type(orig).__name__,
        detail=(str(orig).splitlines() or [""])[0],
    )
    message = "A value in the request is out of range or holds a character the database cannot store."
    return problem(HTTP_422_UNPROCESSABLE_ENTITY, message, errors=[{"field": "", "message": message}])


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled_error", path=request.url.path, method=request.method)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "Internal error; it has been logged.")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ValidationException: handle_validation,
    HTTPException: handle_http,
    IntegrityError: handle_integrity,
    DataError: handle_data_error,
    psycopg.DataError: handle_data_error,
    Exception: handle_unexpected,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "Conflict", "FieldError", "MediaType", "problem"]
