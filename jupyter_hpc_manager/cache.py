"""A one-value TTL cache for cluster status: answers from memory within the TTL, and makes
concurrent refreshes (and refreshes within ``min_refresh`` seconds of a query) share one query.
The clock is injectable so tests can move it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class CacheHit(Generic[T]):
    value: T
    age: float
    cached: bool


class TTLCache(Generic[T]):
    def __init__(self, ttl: float | Callable[[], float],
                 clock: Callable[[], float] = time.monotonic, min_refresh: float = 0.0) -> None:
        self._ttl = ttl
        self.min_refresh = min_refresh
        self.clock = clock
        self._value: T | None = None
        self._stamp: float | None = None
        self._inflight: asyncio.Future[T] | None = None
        self._inflight_since = 0.0
        self._generation = 0

    @property
    def ttl(self) -> float:
        """How long a value is fresh: a number, or what a callable says now (squeue's TTL is
        shorter while the server's own job pends)."""
        return self._ttl() if callable(self._ttl) else self._ttl

    def asking_for(self) -> float:
        """For how long the query now running has been running (0: none runs)."""
        return self.clock() - self._inflight_since if self._inflight is not None else 0.0

    def invalidate(self) -> None:
        """Forget the value, and let the next caller start a new query instead of joining one
        that began before whatever made the value stale."""
        self._value = None
        self._stamp = None
        self._inflight = None
        self._generation += 1

    def is_asking(self) -> bool:
        return self._inflight is not None

    def peek(self) -> CacheHit[T] | None:
        """The newest value, however old, without asking (None: there is none)."""
        if self._stamp is None:
            return None
        return CacheHit(self._value, self.clock() - self._stamp, True)  # type: ignore[arg-type]

    def start(self, fetch: Callable[[], Awaitable[T]], refresh: bool = False) -> None:
        """Begin a query in the background when the value is missing or past its TTL (refresh:
        past ``min_refresh``) and none runs; a later ``get`` or ``peek`` finds its answer. A
        failure is kept by nobody."""
        if self._inflight is not None:
            return
        if (self._stamp is not None
                and self.clock() - self._stamp < (self.min_refresh if refresh else self.ttl)):
            return
        self._inflight = asyncio.ensure_future(self._fetch(fetch))
        self._inflight.add_done_callback(_retrieve)
        self._inflight_since = self.clock()

    async def get(self, fetch: Callable[[], Awaitable[T]], refresh: bool = False) -> CacheHit[T]:
        if self._stamp is not None:
            age = self.clock() - self._stamp
            # A forced refresh right after a query shares that answer: many tabs or clicks
            # must not turn into a stream of squeue calls on the login node.
            if age < (self.min_refresh if refresh else self.ttl):
                return CacheHit(self._value, age, True)  # type: ignore[arg-type]
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch(fetch))
            self._inflight_since = self.clock()
        value = await asyncio.shield(self._inflight)
        return CacheHit(value, 0.0, False)

    async def _fetch(self, fetch: Callable[[], Awaitable[T]]) -> T:
        generation = self._generation
        me = self._inflight
        try:
            value = await fetch()
        finally:
            if self._inflight is me:
                self._inflight = None
        if generation == self._generation:
            self._value = value
            self._stamp = self.clock()
        return value

    async def aclose(self) -> None:
        """Cancel a query still running (the server is stopping)."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None and not inflight.done():
            inflight.cancel()
            await asyncio.gather(inflight, return_exceptions=True)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """A background query's failure is seen here (its callers, if any, got it too)."""
    if not future.cancelled():
        future.exception()
