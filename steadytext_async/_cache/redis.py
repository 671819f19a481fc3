"""The Redis backend (redis-py asyncio): one result cache and one single-flight for every process and host.

Keys under the configured prefix ``P`` (default ``steadytext:``):

- ``P r:<key>``: the entry, ``MAGIC + format + created`` then exactly the sqlite codec's bytes, so a hit is
  byte-identical and a streamed hit replays the same chunk boundaries. Written with ``SET NX`` (and ``PX`` when a TTL
  is set). A value that is not of this format (garbage, truncated, another version, another type) is a miss and
  is deleted if unchanged (compare-and-delete), so the next result overwrites it.
- ``P lock:<key>``: the single-flight lease, a random owner token set with ``SET NX PX`` and renewed while the
  holder produces; released by compare-and-delete after the entry is stored. Waiters poll for the entry with a
  bounded back-off; a dead holder's lease expires after ``lock_ttl`` and the next waiter leads.
- ``P hits``, ``P misses``: counters for ``stats()``.

Eviction is Redis' own: with ``maxmemory`` and ``maxmemory-policy allkeys-lfu`` the least frequently used entries
go first (Redis' LFU counter decays over time, so it ranks like sqlite's frecency); hits answered by the in-process
front layer are reported with ``TOUCH`` so they count too. Nothing but keys derived from sha256 digests, encoded
results and random tokens is written: no API key or credential ever reaches Redis.

Faults never reach a caller. When Redis is unreachable (at start or mid-run) the backend logs one warning, serves
every call from the local sqlite tier, and probes Redis in the background with exponential back-off until it
answers again. The URL's password is never logged: only :func:`~steadytext_async._config.redact_url` is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._config import redact_url
from .base import NO_CLAIM, CacheBackend, CachedEntry, CacheStats, Claim
from .codec import CodecError, pack_entry, unpack_entry

__all__ = ["RedisBackend"]

logger = logging.getLogger("steadytext_async")

T = TypeVar("T")

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)  # OSError includes TimeoutError

# KEYS[1] = lock, ARGV[1] = owner token (, ARGV[2] = new TTL in ms)
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
# KEYS[1] = entry, ARGV[1] = the unreadable value seen: delete it unless someone replaced it meanwhile.
_DROP = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'string' then
  if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
  return 0
end
if t ~= 'none' then return redis.call('DEL', KEYS[1]) end
return 0
"""
_WRONG_TYPE = b"\x00wrong type\x00"  # stands for a key holding a hash, list, ... (never a valid string value)
_DECODE_ON_LOOP = 4096  # larger ones are checked and inflated in a thread (zlib inflates at most ~1032x: ~4 MB here)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisBackend:
    """A :class:`~steadytext_async._cache.base.CacheBackend` on Redis, with ``local`` as the degraded tier.

    All coroutines run on one event loop (the client connects lazily on it); reusable after :meth:`aclose`.
    """

    def __init__(
        self,
        url: str,
        *,
        local: CacheBackend,
        prefix: str = "steadytext:",
        ttl: float | None = None,
        lock_ttl: float = 10.0,
        claim_timeout: float = 600.0,
        poll_min: float = 0.005,
        poll_max: float = 0.05,
        timeout: float = 2.0,
        connect_timeout: float = 1.0,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        secret: str | None = None,
    ) -> None:
        self._url = url
        self._secret = secret.encode("utf-8") if secret else None  # HMAC key of every value; never shown
        self.location = redact_url(url)
        try:
            self._password: str | None = aioredis.connection.parse_url(url).get("password") or None
        except ValueError:
            self._password = None
        self.local = local
        self.prefix = prefix
        self.ttl = ttl
        self.lock_ttl = lock_ttl
        self.claim_timeout = claim_timeout
        self.poll_min, self.poll_max = poll_min, poll_max
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.retry_min, self.retry_max = retry_min, retry_max
        self.errors = 0
        self.shared_hits = 0  # entries answered by Redis (for /metrics; the frontend's other backend hits are local)
        self.claim_waits = 0  # claims that waited for another process's generation (cluster-wide single-flight)
        self.down = False
        self._client: aioredis.Redis | None = None
        self._probe: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._renewals: set[asyncio.Task[None]] = set()
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"RedisBackend({self.location!r}, prefix={self.prefix!r})"

    # -- CacheBackend ----------------------------------------------------------------------------------------
    async def get(self, key: str) -> CachedEntry | None:
        async def op(c: aioredis.Redis) -> CachedEntry | None:
            return self._count(await self._fetch(c, key))

        return await self._call("get", op, lambda: self.local.get(key))

    async def put(self, key: str, entry: CachedEntry) -> None:
        value = pack_entry(entry, key=key, secret=self._secret)
        px = int(self.ttl * 1000) if self.ttl else None

        async def op(c: aioredis.Redis) -> None:
            await c.set(self._entry_key(key), value, nx=True, px=px)

        await self._call("put", op, lambda: self.local.put(key, entry))

    async def account(self, hits: Mapping[str, int], misses: int) -> None:
        if not hits and not misses:
            return

        async def op(c: aioredis.Redis) -> None:
            pipe = c.pipeline(transaction=False)
            if hits:
                pipe.touch(*(self._entry_key(k) for k in hits))  # counts in Redis' LFU
                pipe.incrby(self.prefix + "hits", sum(hits.values()))
            if misses:
                pipe.incrby(self.prefix + "misses", misses)
            await pipe.execute()

        await self._call("account", op, lambda: self.local.account(hits, misses))

    async def claim(self, key: str) -> Claim:
        async def local() -> Claim:
            return NO_CLAIM  # degraded: single-flight within this process only

        async def op(c: aioredis.Redis) -> Claim:
            claim = await self._claim(c, key)
            self._count(claim.entry)
            return claim

        return await self._call("claim", op, local)

    def _count(self, entry: CachedEntry | None) -> CachedEntry | None:
        if entry is not None:
            self.shared_hits += 1
        return entry

    async def stats(self) -> CacheStats:
        async def op(c: aioredis.Redis) -> CacheStats:
            entries = size = 0
            batch: list[bytes] = []
            async for name in c.scan_iter(match=_glob_escape(self.prefix) + "r:*", count=1000):
                batch.append(name)
                if len(batch) >= 1000:
                    entries, size = entries + len(batch), size + await self._strlen(c, batch)
                    batch = []
            entries, size = entries + len(batch), size + await self._strlen(c, batch)
            hits, misses = await c.mget(self.prefix + "hits", self.prefix + "misses")
            return CacheStats(
                entries=entries,
                bytes=size,
                hits=int(hits or 0),
                misses=int(misses or 0),
                path=f"{self.location} {self.prefix}",
                errors=self.errors,
            )

        async def unavailable() -> CacheStats:
            return CacheStats(path=f"{self.location} {self.prefix}", errors=self.errors, available=False)

        return await self._call("stats", op, unavailable)

    async def clear(self) -> None:
        async def op(c: aioredis.Redis) -> None:
            batch: list[bytes] = []
            async for name in c.scan_iter(match=_glob_escape(self.prefix) + "r:*", count=1000):
                batch.append(name)
                if len(batch) >= 1000:
                    await c.unlink(*batch)
                    batch = []
            await c.unlink(*batch, self.prefix + "hits", self.prefix + "misses")

        async def nothing() -> None:
            return None

        await self._call("clear", op, nothing)
        await self.local.clear()

    async def aclose(self) -> None:
        client, tasks = self._client, [*self._renewals, *([self._probe] if self._probe else [])]
        same_loop = self._loop is asyncio.get_running_loop()
        self._forget()
        if same_loop:  # another loop's connections and tasks cannot be awaited here: they are dropped
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        await self.local.aclose()

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connections and tasks (never touch its sockets); reconnect lazily."""
        self._forget()
        after_fork = getattr(self.local, "_after_fork", None)
        if after_fork is not None:
            after_fork()

    def _forget(self) -> None:
        self._client, self._probe, self._loop, self.down = None, None, None, False
        self._renewals.clear()

    # -- single-flight ---------------------------------------------------------------------------------------
    async def _claim(self, c: aioredis.Redis, key: str) -> Claim:
        lock, token = self._lock_key(key), secrets.token_hex(16)
        deadline = time.monotonic() + self.claim_timeout
        delay = self.poll_min
        waited = False
        while True:
            try:
                acquired = await c.set(lock, token, nx=True, px=int(self.lock_ttl * 1000))
                if acquired:  # the entry may have been stored between our miss and the lease
                    entry = await self._fetch(c, key)
                    if entry is not None:
                        await self._release(lock, token)
                        return Claim(entry=entry)
                    return Claim(release=self._lease(lock, token))
            except BaseException:  # cancelled or failed, maybe after Redis set the lease: drop it if ours
                self._spawn_release(lock, token)
                raise
            if not waited:
                waited = True
                self.claim_waits += 1
            if time.monotonic() > deadline:  # a live but stuck holder: produce here rather than wait forever
                return NO_CLAIM
            if not await self._lease_plausible(c, lock):
                return NO_CLAIM
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.poll_max)
            entry = await self._fetch(c, key)
            if entry is not None:
                return Claim(entry=entry)

    async def _lease_plausible(self, c: aioredis.Redis, lock: str) -> bool:
        """False for a lock no holder of ours could have set: no expiry, or one longer than ``lock_ttl`` (a holder
        renews to exactly ``lock_ttl``). Waiting on it would stall every host until ``claim_timeout``."""
        pttl = await c.pttl(lock)
        if pttl == -1 or pttl > int(self.lock_ttl * 1000) + 1000:
            if "lease" not in self._warned:
                self._warned.add("lease")
                logger.warning("shared result cache: ignoring a single-flight lock without a valid expiry (%s)", lock)
            return False
        return True

    def _lease(self, lock: str, token: str) -> Callable[[], Awaitable[None]]:
        """Start renewing the lease; return the coroutine function that stops renewing and releases it."""
        renewal = asyncio.get_running_loop().create_task(self._renew(lock, token))
        self._renewals.add(renewal)
        renewal.add_done_callback(self._renewals.discard)

        async def release() -> None:
            renewal.cancel()
            await self._release(lock, token)

        return release

    async def _renew(self, lock: str, token: str) -> None:
        ms = int(self.lock_ttl * 1000)
        while True:
            await asyncio.sleep(self.lock_ttl / 3)
            client = self._client
            if client is None or self.down:
                return  # the lease expires on its own
            try:
                if not await client.eval(_RENEW, 1, lock, token, ms):
                    return  # lost (expired or flushed): another process may lead now, which is harmless
            except (RedisError, OSError):
                return

    async def _release(self, lock: str, token: str) -> None:
        async def op(c: aioredis.Redis) -> None:
            await c.eval(_RELEASE, 1, lock, token)

        async def nothing() -> None:
            return None

        await self._call("release", op, nothing)

    def _spawn_release(self, lock: str, token: str) -> None:
        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(self._release(lock, token))
            self._renewals.add(task)
            task.add_done_callback(self._renewals.discard)

    # -- reads -----------------------------------------------------------------------------------------------
    async def _fetch(self, c: aioredis.Redis, key: str) -> CachedEntry | None:
        name = self._entry_key(key)
        try:
            got = await c.get(name)
            blob = got.encode() if isinstance(got, str) else got
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            blob = _WRONG_TYPE
        if blob is None:
            return None
        try:
            if len(blob) <= _DECODE_ON_LOOP:
                return unpack_entry(blob, key=key, secret=self._secret)
            return await asyncio.to_thread(unpack_entry, blob, key=key, secret=self._secret)  # the loop keeps going
        except CodecError as exc:
            logger.warning("dropping unreadable shared result cache entry (%s)", exc)
            self.errors += 1
            await c.eval(_DROP, 1, name, blob)
            return None

    @staticmethod
    async def _strlen(c: aioredis.Redis, names: list[bytes]) -> int:
        if not names:
            return 0
        pipe = c.pipeline(transaction=False)
        for name in names:
            pipe.strlen(name)
        return sum(int(n) for n in await pipe.execute(raise_on_error=False) if isinstance(n, int))

    # -- connection and degradation --------------------------------------------------------------------------
    def _entry_key(self, key: str) -> str:
        return f"{self.prefix}r:{key}"

    def _lock_key(self, key: str) -> str:
        return f"{self.prefix}lock:{key}"

    def _new_client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self._url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.connect_timeout,
            retry=Retry(NoBackoff(), 1),  # one reconnect for a stale pooled connection, then degrade
            health_check_interval=30,
        )

    async def _call(
        self,
        what: str,
        op: Callable[[aioredis.Redis], Awaitable[T]],
        local: Callable[[], Awaitable[T]],
    ) -> T:
        """``op`` on Redis; the local tier when Redis is down, fails to answer, or answers with an error."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop: connections and tasks belong to their loop
            self._forget()
            self._loop = loop
        if self.down:
            return await local()
        if self._client is None:
            self._client = self._new_client()
        try:
            return await op(self._client)
        except _UNREACHABLE as exc:
            self._went_down(exc)
        except RedisError as exc:  # e.g. OOM under maxmemory with noeviction, a read-only replica
            self.errors += 1
            if type(exc).__name__ not in self._warned:  # once per kind of error, whichever call met it first
                self._warned.add(type(exc).__name__)
                logger.warning("shared result cache %s failed, using the local cache: %s", what, self._safe(exc))
        return await local()

    def _went_down(self, exc: BaseException) -> None:
        if self.down:
            return
        self.down = True
        self.errors += 1
        logger.warning(
            "shared result cache %s unreachable (%s); using the local cache and retrying in the background",
            self.location,
            self._safe(exc),
        )
        client, self._client = self._client, None
        self._probe = asyncio.get_running_loop().create_task(self._reconnect(client))

    async def _reconnect(self, old: aioredis.Redis | None) -> None:
        if old is not None:
            with contextlib.suppress(Exception):
                await old.aclose()
        delay = self.retry_min
        while True:
            await asyncio.sleep(delay)
            client = self._new_client()
            try:
                await client.ping()
            except (RedisError, OSError):  # OSError includes TimeoutError
                with contextlib.suppress(Exception):
                    await client.aclose()
                delay = min(delay * 2, self.retry_max)
                continue
            self._client, self.down, self._probe = client, False, None
            logger.info("shared result cache %s is reachable again", self.location)
            return

    def _safe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        return text.replace(self._password, "***") if self._password else text
