"""The worker lanes: minutes-long work never takes a slot that a short report needs."""

from __future__ import annotations

import asyncio

from bot.workers import WorkerPool


def test_long_jobs_do_not_take_short_slots() -> None:
    async def scenario() -> list[str]:
        pool = WorkerPool(size=2)
        pool.start()
        release = asyncio.Event()
        done: list[str] = []

        async def deploy() -> None:
            await release.wait()
            done.append("deploy")

        async def report() -> None:
            done.append("report")

        for n in range(5):
            pool.submit(f"deploy-{n}", deploy, lane="long")
        for n in range(4):
            pool.submit(f"health-{n}", report)
        # Every short job finishes while five long ones (more than the pool's size) still run.
        await asyncio.wait_for(pool.join(), timeout=5)
        assert pool.long_running == 5
        release.set()
        await pool.stop()
        return done

    done = asyncio.run(scenario())
    assert done == ["report"] * 4 + ["deploy"] * 5


def test_a_failing_job_does_not_kill_its_lane() -> None:
    async def scenario() -> int:
        pool = WorkerPool(size=1)
        pool.start()
        ran = 0

        async def boom() -> None:
            raise RuntimeError("bug")

        async def fine() -> None:
            nonlocal ran
            ran += 1

        for lane in ("short", "long"):
            pool.submit("boom", boom, lane=lane)  # type: ignore[arg-type]
            pool.submit("fine", fine, lane=lane)  # type: ignore[arg-type]
        await pool.join()
        await pool.stop()
        return ran

    assert asyncio.run(scenario()) == 2
