"""The status cache, with a clock the test moves."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_hpc_manager.cache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(ttl: float = 120):
    clock = Clock()
    calls = []

    async def fetch():
        calls.append(clock.now)
        n = len(calls)  # which fetch this is
        await asyncio.sleep(0.01)
        return n

    return TTLCache(ttl, clock), clock, calls, fetch


def test_within_ttl_one_fetch_then_a_new_one():
    async def main():
        cache, clock, calls, fetch = make()
        first = await cache.get(fetch)
        assert (first.value, first.cached) == (1, False)
        clock.now += 45
        second = await cache.get(fetch)
        assert (second.value, second.cached, int(second.age)) == (1, True, 45)
        clock.now += 80  # 125 s: past the TTL
        third = await cache.get(fetch)
        assert (third.value, third.cached) == (2, False)
        assert len(calls) == 2

    asyncio.run(main())


def test_refresh_forces_a_fetch():
    async def main():
        cache, _, calls, fetch = make()
        await cache.get(fetch)
        hit = await cache.get(fetch, refresh=True)
        assert (hit.value, hit.cached) == (2, False)

    asyncio.run(main())


def test_concurrent_refreshes_share_one_fetch():
    async def main():
        cache, _, calls, fetch = make()
        hits = await asyncio.gather(*(cache.get(fetch, refresh=True) for _ in range(20)))
        assert len(calls) == 1
        assert {h.value for h in hits} == {1}

    asyncio.run(main())


def test_invalidate_makes_the_next_call_fetch_even_while_one_is_in_flight():
    async def main():
        cache, _, calls, fetch = make()
        await cache.get(fetch)
        early = asyncio.ensure_future(cache.get(fetch, refresh=True))
        await asyncio.sleep(0)
        cache.invalidate()
        late = await cache.get(fetch)
        assert late.value == 3 and not late.cached  # its own fetch, not the early one (2)
        assert (await early).value == 2
        # The query that began before the invalidation is not kept as the fresh value.
        assert (await cache.get(fetch)).value == 3
        assert len(calls) == 3

    asyncio.run(main())


def test_refresh_within_min_refresh_shares_the_last_answer():
    async def main():
        cache, clock, calls, fetch = make()
        cache.min_refresh = 1.0
        await cache.get(fetch, refresh=True)
        clock.now += 0.5
        hit = await cache.get(fetch, refresh=True)
        assert (hit.value, hit.cached) == (1, True)
        clock.now += 0.6
        hit = await cache.get(fetch, refresh=True)
        assert (hit.value, hit.cached) == (2, False)

    asyncio.run(main())


def test_zero_ttl_never_caches():
    async def main():
        cache, _, calls, fetch = make(ttl=0)
        await cache.get(fetch)
        await cache.get(fetch)
        assert len(calls) == 2

    asyncio.run(main())


def test_a_failed_fetch_is_not_cached():
    async def main():
        cache, _, _, _ = make()
        n = 0

        async def flaky():
            nonlocal n
            n += 1
            if n == 1:
                raise RuntimeError("down")
            return "ok"

        with pytest.raises(RuntimeError, match=r"^down$"):
            await cache.get(flaky)  # the failure reaches the caller...
        hit = await cache.get(flaky)  # ...and is not kept: the next call fetches again
        assert (hit.value, hit.cached, n) == ("ok", False, 2)

    asyncio.run(main())
