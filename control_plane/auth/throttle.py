"""Login throttling in Redis, so every control-plane replica counts the same failures."""

from __future__ import annotations

import hashlib

from shared.redis_client import RedisClient


class LoginThrottle:
    def __init__(self, redis: RedisClient, prefix: str, max_attempts: int, window_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self.max_attempts = max_attempts
        self.window_s = window_s

    def _key(self, email: str, client: str) -> str:
        digest = hashlib.sha256(f"{email.lower()}|{client}".encode()).hexdigest()[:32]
        return f"{self._prefix}:login:{digest}"

    async def retry_after(self, email: str, client: str) -> int:
        """Seconds until another try is allowed; 0 when allowed now."""
        key = self._key(email, client)
        count = await self._redis.get(key)
        if count is not None and int(count) >= self.max_attempts:
            ttl = await self._redis.ttl(key)
            return max(int(ttl), 1)
        return 0

    async def failed(self, email: str, client: str) -> None:
        key = self._key(email, client)
        # The window starts at the first failure: SET NX EX then INCR, in one MULTI (EXPIRE NX would
        # need Redis 7; the bundled server is 6.2).
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=self.window_s, nx=True)
            pipe.incr(key)
            await pipe.execute()

    async def succeeded(self, email: str, client: str) -> None:
        await self._redis.delete(self._key(email, client))
