"""Opaque API tokens ``<id>|<secret>``: only the sha256 of the secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def format_token(token_id: int, secret: str) -> str:
    return f"{token_id}|{secret}"


def parse_token(raw: str) -> tuple[int, str] | None:
    token_id, sep, secret = raw.partition("|")
    if not sep or not token_id.isdigit() or not secret or len(token_id) > 18:
        return None
    return int(token_id), secret


def secret_matches(stored_hash: str, secret: str) -> bool:
    return hmac.compare_digest(stored_hash, hash_secret(secret))
