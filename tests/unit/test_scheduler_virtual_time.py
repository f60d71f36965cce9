"""The virtual-time loop and clocks the scheduler's tests stand on."""

from __future__ import annotations

import asyncio
import time

import pytest

from bitrix_results._scheduler.clock import SystemClock
from bitrix_results.testing.virtual_time import (
    DEFAULT_EPOCH,
    VirtualClock,
    VirtualTimeLoop,
    run,
)


def test_sleeping_takes_no_real_time() -> None:
    async def main() -> float:
        await asyncio.sleep(600)
        await asyncio.gather(asyncio.sleep(30), asyncio.sleep(20))
        return asyncio.get_running_loop().time()

    start = time.perf_counter()
    assert run(main()) == pytest.approx(630.0)
    assert time.perf_counter() - start < 1


def test_virtual_clock_follows_the_loop() -> None:
    async def main() -> tuple[float, float, float, float]:
        clock = VirtualClock()
        wall, mono = clock.time(), clock.monotonic()
        await clock.sleep(12.5)
        return wall, mono, clock.time(), clock.monotonic()

    wall, mono, wall_after, mono_after = run(main())
    assert (wall, mono) == (DEFAULT_EPOCH, 0.0)
    assert (wall_after, mono_after) == (DEFAULT_EPOCH + 12.5, 12.5)


def test_timeouts_fire_on_virtual_time() -> None:
    async def main() -> float:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.Event().wait()
        return asyncio.get_running_loop().time()

    assert run(main()) == pytest.approx(5.0)


def test_deadlock_fails_loudly() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    runner = asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(deadlock_after=0.01))
    with runner, pytest.raises(RuntimeError, match="deadlock"):
        runner.run(main())


def test_a_timer_that_rearms_at_the_same_instant_does_not_spin() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        deadline = 1.0

        def check() -> None:
            # Like a limiter whose next wake-up rounds to "now": re-arm until
            # the clock has moved past the deadline.
            if loop.time() > deadline:
                done.set_result(loop.time())
            else:
                loop.call_at(max(loop.time(), deadline), check)

        loop.call_at(deadline, check)
        return await done

    assert run(main()) > 1.0


def test_advance_refuses_going_back() -> None:
    loop = VirtualTimeLoop()
    try:
        with pytest.raises(ValueError, match="negative"):
            loop.advance(-1)
    finally:
        loop.close()


def test_system_clock() -> None:
    clock = SystemClock()
    assert abs(clock.time() - time.time()) < 1
    assert abs(clock.monotonic() - time.monotonic()) < 1

    async def main() -> float:
        loop_time = asyncio.get_running_loop().time()
        await clock.sleep(-1)  # returns at once
        return clock.monotonic() - loop_time

    assert 0 <= asyncio.run(main()) < 1
    assert repr(clock) == "SystemClock()"
