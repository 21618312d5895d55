"""Encryption of secrets at rest (agent credentials) with VLB_SECRET_KEY, and re-encryption for
snapshots with VLB_SNAPSHOT_KEY. Fernet: AES-128-CBC + HMAC-SHA256, from `cryptography`."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken


class SecretKeyMissing(RuntimeError):
    """A secret must be stored or read but no key is configured."""


@lru_cache(maxsize=8)
def _fernet(key: str) -> Fernet:
    if not key:
        raise SecretKeyMissing("VLB_SECRET_KEY / VLB_SNAPSHOT_KEY is not set")
    return Fernet(key.encode())


def encrypt(key: str, plaintext: str) -> str:
    return _fernet(key).encrypt(plaintext.encode()).decode()


def decrypt(key: str, token: str) -> str:
    try:
        return _fernet(key).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretKeyMissing("stored secret cannot be decrypted with the configured key") from exc
