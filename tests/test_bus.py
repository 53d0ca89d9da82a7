"""Wake-ups between processes over PostgreSQL: the commit that causes a wake-up carries it.

Two Parley apps in this event loop share one PostgreSQL database, each with its own bus (its own
origin, as two processes): an API process (``PARLEY_WORKER=off``) and a worker process. A run
created on the API wakes the idle worker with its creating commit, and every commit of the
run's events wakes the API's reader: the API process sends nothing over its own connection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from parley.bus.relay import RelayBus
from parley.config import Settings
from tests.conftest import fresh_postgres, serve
from tests.sse import assert_contiguous, new_thread, read_events


def _settings(url: str, data_dir: Path, worker: str) -> Settings:
    return Settings(
        database_url=url,
        data_dir=data_dir,
        bus="postgres",
        worker=worker,  # type: ignore[arg-type]
        model="scripted:echo?delay_ms=5",
        knowledge={},
        ingest_workers="thread",
        log_json=True,
    )


async def test_a_run_created_on_one_process_wakes_the_worker_and_its_reader_by_the_commits(
    tmp_path: Path,
) -> None:
    async with (
        fresh_postgres() as url,
        serve(_settings(url, tmp_path / "w", "on")) as worker,
        serve(_settings(url, tmp_path / "a", "off")) as api,
    ):
        api_bus, worker_bus = api.parley.bus, worker.parley.bus
        assert isinstance(api_bus, RelayBus)
        assert isinstance(worker_bus, RelayBus)
        await asyncio.sleep(0.2)  # the worker's first claim found nothing: it waits for a wake-up
        sent, heard = api_bus.sent, worker_bus.received
        thread = await new_thread(api.client)
        response = await api.client.post(f"/v1/threads/{thread}/runs", json={"input": "one two three"})
        assert response.status_code == 201, response.text
        run_id = response.json()["id"]
        async with asyncio.timeout(4):  # the worker's fallback poll is 5 s: this was a wake-up
            frames = await read_events(api.client, f"/v1/runs/{run_id}/events")
        assert frames[-1].event == "run.completed"
        assert "".join(f.json["text"] for f in frames if f.event == "message.delta") == "one two three"
        assert worker_bus.received > heard  # the queued run's wake-up reached the worker
        assert api_bus.received > 0  # the events' wake-ups reached the API's reader
        assert api_bus.sent == sent  # ...and the API process sent none of its own


async def test_many_readers_on_another_process_each_get_their_own_run_whole(tmp_path: Path) -> None:
    """The API process reads the events of runs the worker writes, on the few connections it
    keeps for reads: sixteen readers at once, four more that leave early and sixteen resuming
    from the middle each get their own run, whole and in order."""
    async with (
        fresh_postgres() as url,
        serve(_settings(url, tmp_path / "w", "on")) as worker,
        serve(_settings(url, tmp_path / "a", "off")) as api,
    ):
        assert worker.parley.bus is not None
        texts = [" ".join(f"r{i}w{j}" for j in range(12)) for i in range(16)]
        runs = []
        for text in texts:
            thread = await new_thread(api.client)
            response = await api.client.post(f"/v1/threads/{thread}/runs", json={"input": text})
            assert response.status_code == 201, response.text
            runs.append(response.json()["id"])

        async def whole(run_id: str) -> str:
            frames = await read_events(api.client, f"/v1/runs/{run_id}/events")
            assert_contiguous(frames)
            assert frames[-1].event == "run.completed"
            return "".join(f.json["text"] for f in frames if f.event == "message.delta")

        async def leaves_early(run_id: str) -> int:
            frames = await read_events(api.client, f"/v1/runs/{run_id}/events", limit=2)
            return len(frames)

        async with asyncio.timeout(20):
            got = await asyncio.gather(*(whole(r) for r in runs), *(leaves_early(r) for r in runs[:4]))
            assert got[: len(runs)] == texts
            assert got[len(runs) :] == [2] * 4
            # Resumed from the middle, after every run has ended: each from its own cursor.
            resumed = await asyncio.gather(
                *(
                    read_events(api.client, f"/v1/runs/{r}/events", headers={"Last-Event-ID": "3"})
                    for r in runs
                )
            )
        for frames in resumed:
            assert_contiguous(frames, start=4)
            assert frames[-1].event == "run.completed"
