"""A polite JSON client for the importer: retries 429/5xx and connection errors with back-off (honouring
``Retry-After``), pages through ``{data, meta}`` lists, and turns every failure into an
:class:`ImportFailure` whose message says what to fix."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx

RETRY_STATUSES = {429, 500, 502, 503, 504}
# Bounds a list walk: 1,000 pages of 100 is far beyond any tenant the original could hold.
MAX_PAGES = 1000


class ImportFailure(Exception):
    """The import cannot go on; the message is printed as is."""


class JsonApi:
    """One side of the import (the original system or ours) behind a bearer token."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        label: str,
        token: str,
        attempts: int = 5,
        backoff_s: float = 0.5,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.label = label
        self.token = token
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.progress = progress or (lambda _line: None)

    async def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        where = f"{method} {path}"
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self.client.request(method, path, json=json, params=params, headers=headers)
            except httpx.TransportError as exc:
                if attempt == self.attempts:
                    raise ImportFailure(
                        f"cannot reach {self.label} at {self.client.base_url} ({where}: {exc.__class__.__name__}"
                        f"{': ' + str(exc) if str(exc) else ''}); check the URL and that it is running"
                    ) from exc
                await self._wait(attempt, None, where, exc.__class__.__name__)
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.attempts:
                await self._wait(
                    attempt, response.headers.get("retry-after"), where, str(response.status_code)
                )
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait(self, attempt: int, retry_after: str | None, where: str, why: str) -> None:
        delay = self.backoff_s * 2 ** (attempt - 1)
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                delay = max(delay, min(float(retry_after), 60.0))
        self.progress(f"{self.label}: {where} answered {why}; retrying in {delay:.1f} s")
        await asyncio.sleep(delay)

    def fail(self, response: httpx.Response, method: str, path: str) -> ImportFailure:
        status = response.status_code
        if status == 401:
            hint = "the token was refused; check it (and that it belongs to this system)"
        elif status == 403:
            hint = "the token's user may not do this (an admin of the tenant is needed)"
        elif status == 404:
            hint = "no such route; is this the right URL?"
        else:
            hint = _detail(response)
        return ImportFailure(f"{self.label} answered {status} to {method} {path}: {hint}")

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        response = await self.request("GET", path, params=params)
        if response.status_code != 200:
            raise self.fail(response, "GET", path)
        return _decode(response, self.label, path)

    async def get_optional(self, path: str) -> Any | None:
        """A route that an installation may not have: ``None`` on 404 (other failures still raise)."""
        response = await self.request("GET", path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.fail(response, "GET", path)
        return _decode(response, self.label, path)

    async def list_all(
        self, path: str, *, per_page: int = 100, optional: bool = False
    ) -> list[dict[str, Any]] | None:
        """Every item of a list route, page by page. A bare JSON array is taken as the whole list."""
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            response = await self.request("GET", path, params={"page": page, "per_page": per_page})
            if response.status_code == 404 and optional and page == 1:
                return None
            if response.status_code != 200:
                raise self.fail(response, "GET", path)
            body = _decode(response, self.label, path)
            if isinstance(body, list):
                items.extend(body)
                return items
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise ImportFailure(f"{self.label}: GET {path} did not answer a list ({str(body)[:120]})")
            data: list[dict[str, Any]] = body["data"]
            items.extend(data)
            meta = body.get("meta") or {}
            last = meta.get("last_page")
            total = meta.get("total")
            self.progress(
                f"{self.label}: {path} page {page}{f'/{last}' if last else ''}, {len(items)} so far"
            )
            if not data:
                break
            if last is not None and page >= int(last):
                break
            if last is None and (total is None or len(items) >= int(total)) and len(data) < per_page:
                break
        return items

    async def write(self, method: str, path: str, body: Any) -> Any:
        response = await self.request(method, path, json=body)
        if response.status_code not in (200, 201, 204):
            raise ImportFailure(
                f"{self.label} refused {method} {path} ({response.status_code}): {_detail(response)}"
            )
        return _decode(response, self.label, path) if response.content else None


def _decode(response: httpx.Response, label: str, path: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ImportFailure(f"{label}: {path} did not answer JSON (is this the right URL?)") from exc


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors if isinstance(e, dict))
        return str(body.get("detail") or body.get("message") or body.get("title") or body)[:300]
    return str(body)[:300]
