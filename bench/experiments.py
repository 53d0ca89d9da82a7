"""Experiments: the cost of assignment, of exposing a run, and of reading results and usage.

1. ``choose()`` per call (SHA-256 of key, salt and user).
2. The run-creating transaction with the experiment assignment (two indexed reads and an
   insert) against without, alternating one with the other.
3. ``GET /v1/experiments/{key}/results`` and ``GET /v1/usage`` computed over N runs with
   30 events each (3% with a fallback), against a bare ``GROUP BY`` count of the same rows
   as the floor, on SQLite and PostgreSQL.

Run: ``python -m bench.experiments``.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, insert, select

from bench._util import machine, pct, postgres
from bench.event_log import _fresh_pg
from parley.assistants import Assistant, Assistants
from parley.config import Settings
from parley.experiments import Experiment, Experiments, ExperimentSpec, Exposure, VariantSpec, choose
from parley.feedback import Feedback
from parley.providers.registry import Providers
from parley.results import experiment_results
from parley.store.db import Database
from parley.store.schema import Event, Message, Run, Thread, User, new_id
from parley.usage import usage_report
from parley.users import Principal

CONFIG = """
[experiments.bench]
[[experiments.bench.variants]]
name = "a"
[[experiments.bench.variants]]
name = "b"
instructions = "Be brief."
"""
CREATES = 300
SIZES = (1_000, 10_000)
EVENTS_PER_RUN = 30


def assignment() -> None:
    variants = [
        VariantSpec(name="a", weight=70),
        VariantSpec(name="b", weight=20),
        VariantSpec(name="c", weight=10),
    ]
    n = 200_000
    started = time.perf_counter()
    for user in range(n):
        choose(variants, "bench", "", user)
    per_call = (time.perf_counter() - started) / n * 1e6
    print(f"assignment: choose() {per_call:.2f} µs per call ({n:,} users, 3 variants)")


async def _creating_transactions(url: str) -> dict[str, list[float]]:
    """The run-creating transaction (thread lock, run insert): without the assignment hook, with
    it and no running experiment, and with a running one; interleaved, so that machine load hits
    all three alike."""
    db = Database(url)
    await db.upgrade()
    assistants = Assistants.load("scripted:echo")
    assistants.add(Assistant(name="other", description="", instructions=""))
    experiments = Experiments(db, assistants, Providers(Settings()))
    await experiments.create(
        ExperimentSpec(
            key="bench", assistant="other", variants=[VariantSpec(name="a"), VariantSpec(name="b")]
        ),
        start=True,
    )
    modes = ("plain", "idle hook", "experiment")
    async with db.transaction() as session:
        user = User(name="bench")
        session.add(user)
        await session.flush()
        threads = [
            Thread(id=new_id("thr"), user_id=user.id, assistant="other" if i % 3 == 2 else "general")
            for i in range(3 * CREATES)
        ]
        session.add_all(threads)
    out: dict[str, list[float]] = {mode: [] for mode in modes}
    for i, target in enumerate(threads):
        mode = modes[i % 3]
        started = time.perf_counter()
        async with db.transaction() as session:
            thread = await session.get(Thread, target.id, with_for_update=True)
            assert thread is not None
            run = Run(
                id=new_id("run"), thread_id=thread.id, user_id=user.id, assistant=thread.assistant, input="hi"
            )
            if mode != "plain":
                await experiments.assign(session, run, thread)
            session.add(run)
        out[mode].append((time.perf_counter() - started) * 1000)
    await db.close()
    return out


def run_creation() -> None:
    with tempfile.TemporaryDirectory() as tmp, postgres() as pg:
        targets = [("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / 'create.db'}")]
        if pg:
            targets.append(("postgres", asyncio.run(_fresh_pg(pg))))
        for name, url in targets:
            timings = asyncio.run(_creating_transactions(url))
            base = pct(timings["plain"], 50)
            print(
                f"{name:8s} run-creating transaction, p50 of {CREATES} each: no hook {base:.2f} ms   "
                + "   ".join(
                    f"{mode} {pct(timings[mode], 50):.2f} ms ({pct(timings[mode], 50) / base:.2f}x)"
                    for mode in ("idle hook", "experiment")
                )
            )


async def _seed(db: Database, runs: int) -> None:
    rng = random.Random(7)
    spec = ExperimentSpec(key="bench", variants=[VariantSpec(name="a"), VariantSpec(name="b")])
    async with db.transaction() as session:
        session.add(
            Experiment(
                key="bench", assistant="general", status="running", running_assistant="general", control="a",
                salt="", variants=[v.model_dump() for v in spec.variants], source="api",
            )
        )  # fmt: skip
    users = max(1, runs // 4)
    async with db.transaction() as session:
        await session.execute(
            insert(User), [{"name": f"u{i}", "is_admin": False, "created_at": 0.0} for i in range(users)]
        )
        user_ids = list((await session.scalars(select(User.id).order_by(User.id))).all())
    now = time.time()
    batch = 2_000
    for start in range(0, runs, batch):
        threads, run_rows, messages, exposures, feedback, events = [], [], [], [], [], []
        for i in range(start, min(runs, start + batch)):
            user = user_ids[i % users]
            thread, run, message = new_id("thr"), new_id("run"), new_id("msg")
            variant = choose(spec.variants, "bench", "", user).name
            usage = {
                "input_tokens": rng.randint(50, 800),
                "output_tokens": rng.randint(20, 400),
                "cost_usd": rng.uniform(0.0001, 0.01),
                "latency_ms": rng.lognormvariate(6.5, 0.5),
                "ttft_ms": rng.lognormvariate(5.5, 0.5),
            }
            created = now - rng.uniform(0, 25 * 86400)
            threads.append({"id": thread, "user_id": user, "assistant": "general", "metadata": {}, "created_at": created, "updated_at": created})  # fmt: skip
            run_rows.append({
                "id": run, "thread_id": thread, "user_id": user, "assistant": "general", "status": "completed",
                "attempt": 1, "input": "q", "output_message_id": message, "usage": usage, "model": "scripted:echo",
                "variant": variant, "multitask": "reject", "options": {}, "created_at": created,
            })  # fmt: skip
            messages.append({"id": message, "thread_id": thread, "role": "assistant", "content": "a", "run_id": run, "data": {}, "created_at": created})  # fmt: skip
            exposures.append({"run_id": run, "experiment_key": "bench", "variant": variant, "user_id": user, "thread_id": thread, "created_at": created})  # fmt: skip
            if rng.random() < 0.5:
                feedback.append({"message_id": message, "user_id": user, "run_id": run, "rating": rng.choice((1, -1)), "created_at": created, "updated_at": created})  # fmt: skip
            fallback_at = 2 if rng.random() < 0.03 else -1
            for seq in range(1, EVENTS_PER_RUN + 1):
                kind = "provider.fallback" if seq == fallback_at else "message.delta"
                events.append({"run_id": run, "seq": seq, "type": kind, "data": "{}", "created_at": created})
        async with db.transaction() as session:
            for table, rows in ((Thread, threads), (Run, run_rows), (Message, messages), (Exposure, exposures), (Feedback, feedback), (Event, events)):  # fmt: skip
                if rows:
                    await session.execute(insert(table), rows)


async def _time(fn: object, repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def reads(url: str, runs: int) -> tuple[float, float, float, float]:
    db = Database(url)
    await db.upgrade()
    try:
        await _seed(db, runs)
        async with db.session() as session:
            experiment = await session.get(Experiment, "bench")
        assert experiment is not None
        admin = Principal(0, "admin", is_admin=True)

        async def results() -> None:
            await experiment_results(db, experiment)

        async def counts() -> None:
            async with db.session() as session:
                await session.execute(
                    select(Exposure.variant, func.count(), func.count(func.distinct(Exposure.user_id)))
                    .where(Exposure.experiment_key == "bench")
                    .group_by(Exposure.variant)
                )

        async def usage() -> None:
            await usage_report(
                db, admin, since=time.time() - 30 * 86400, until=time.time(), group_by=["day", "model"]
            )

        async def sums() -> None:
            async with db.session() as session:
                await session.execute(select(Run.model, func.count()).group_by(Run.model))

        return await _time(results), await _time(counts), await _time(usage), await _time(sums)
    finally:
        await db.close()


def read_paths() -> None:
    with tempfile.TemporaryDirectory() as tmp, postgres() as pg:
        for runs in SIZES:
            targets = [("sqlite", f"sqlite+aiosqlite:///{Path(tmp) / f'r{runs}.db'}")]
            if pg:
                targets.append(("postgres", asyncio.run(_fresh_pg(pg))))
            for name, url in targets:
                results, counts, usage, sums = asyncio.run(reads(url, runs))
                print(
                    f"{name:8s} {runs:>7,} runs  results {results:8.1f} ms (bare count {counts:6.1f} ms, "
                    f"{results / counts:5.1f}x)   usage {usage:8.1f} ms (bare group-by {sums:6.1f} ms, {usage / sums:5.1f}x)"
                )


def main() -> None:
    print(f"machine: {machine()}")
    assignment()
    run_creation()
    read_paths()


if __name__ == "__main__":
    main()
