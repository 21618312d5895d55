"""What Litestar's generated OpenAPI document leaves out, added in one place so the document states what
the API really answers (checked by schemathesis in tests/control_plane/test_api_fuzz.py):

- the bearer-token security scheme, on every operation but register and login;
- the problem+json errors (control_plane/errors.py) each operation can answer: 401 without a valid
  token, 403 for a viewer's write, 404 for an id that is not the tenant's, 409 for a conflicting
  write, 422 for a value outside the schema (body, path or query), 429 for too many logins, 503 for a
  control plane that is not ready; Litestar's own 400 entry (``application/json``, a shape the API
  never sends) becomes the problem+json one;
- bigint limits as integers (Litestar writes ``maximum`` as a float, which rounds 2^63-1 up to 2^63).
"""

from __future__ import annotations

from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
)

from control_plane.errors import PROBLEM_JSON, TITLES
from control_plane.params import MAX_ID

PUBLIC = {("POST", "/api/register"), ("POST", "/api/login")}
OPS_PATHS = ("/health", "/ready", "/metrics")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
# Writes a viewer may make (control_plane.auth.context.VIEWER_MAY_WRITE): their own session and profile.
VIEWER_WRITES = {"/api/logout", "/api/user", "/api/profile", "/api/user/password", "/api/profile/password"}
BEARER = "BearerToken"

PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    description="An RFC 9457 problem; ``errors`` names the fields of a 422.",
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["field", "message"],
                properties={
                    "field": Schema(type=OpenAPIType.STRING),
                    "message": Schema(type=OpenAPIType.STRING),
                },
            ),
        ),
    },
)


def _problem(status: int, why: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=f"{TITLES.get(status, 'Error')}: {why}",
        content={PROBLEM_JSON: OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))},
    )


def _errors_for(method: str, path: str, operation: Operation) -> dict[int, str]:
    parameters = operation.parameters or []
    has_path_id = "{" in path
    takes_input = bool(parameters) or operation.request_body is not None
    errors: dict[int, str] = {400: "a body that is not JSON"}
    if (method, path) == ("POST", "/api/login"):
        errors[401] = "wrong email or password"
    elif (method, path) not in PUBLIC:
        errors[401] = "no valid bearer token"
        if method in WRITES and path not in VIEWER_WRITES:
            errors[403] = "a viewer cannot change anything"
    if has_path_id:
        errors[404] = "no such record in the tenant"
    if method in WRITES:
        errors[409] = "the change conflicts with existing data"
    if takes_input:
        errors[422] = "a value outside the schema (the errors name the fields)"
    if (method, path) == ("POST", "/api/login"):
        errors[429] = "too many failed logins"
    return errors


def _integer_limits(schema: Schema | Reference | None) -> None:
    if not isinstance(schema, Schema):
        return
    for attr in ("maximum", "minimum"):
        value = getattr(schema, attr)
        if isinstance(value, float) and abs(value) >= 2**53:
            setattr(schema, attr, MAX_ID if value > 0 else -MAX_ID)
    for inner in (*(schema.one_of or []), *(schema.any_of or [])):
        _integer_limits(inner)


def document_responses(openapi: OpenAPI) -> OpenAPI:
    """Add the security scheme and the error answers to every operation of ``openapi`` (in place)."""
    components = openapi.components if isinstance(openapi.components, Components) else Components()
    components.schemas = {**(components.schemas or {}), "Problem": PROBLEM_SCHEMA}
    components.security_schemes = {
        **(components.security_schemes or {}),
        BEARER: SecurityScheme(type="http", scheme="bearer", description="A token from POST /api/login."),
    }
    openapi.components = components
    for path, item in (openapi.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            operation: Operation | None = getattr(item, method, None)
            if operation is None:
                continue
            for parameter in operation.parameters or []:
                if not isinstance(parameter, Reference):
                    _integer_limits(parameter.schema)
            if path in OPS_PATHS:
                if path == "/ready":
                    operation.responses = {**(operation.responses or {}), "503": _problem(503, "not ready")}
                continue
            responses = dict(operation.responses or {})
            for status, why in _errors_for(method.upper(), path, operation).items():
                responses[str(status)] = _problem(status, why)
            operation.responses = responses
            if (method.upper(), path) not in PUBLIC:
                operation.security = [{BEARER: []}]
    return openapi
