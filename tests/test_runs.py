"""Runs over the native API: streaming, resume, cancel, multitask, idempotency."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from parley.providers.base import TextDelta
from parley.providers.scripted import Hang, ScriptedProvider
from parley.runs.lifecycle import NewRun
from parley.store.schema import Event, Run
from tests.conftest import Server, serve
from tests.sse import assert_contiguous, kinds, new_thread, read_events, start_run

TEXT = "the quick brown fox jumps over the lazy dog"


async def test_run_streams_the_echo_and_completes(server: Server) -> None:
    thread = await new_thread(server.client)
    run = await start_run(server.client, thread, TEXT)
    assert run["status"] in ("queued", "running")
    frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    assert_contiguous(frames)
    assert frames[0].event == "run.started"
    assert frames[0].json["assistant"] == "general"
    deltas = [f.json["text"] for f in frames if f.event == "message.delta"]
    assert "".join(deltas) == TEXT
    assert frames[-1].event == "run.completed"
    done = frames[-1].json
    assert done["text"] == TEXT
    assert done["usage"]["output_tokens"] == len(TEXT.split())
    assert done["usage"]["latency_ms"] >= done["usage"]["ttft_ms"] >= 0

    final = (await server.client.get(f"/v1/runs/{run['id']}")).json()
    assert final["status"] == "completed"
    assert final["output"] == TEXT
    assert final["output_message_id"] == done["message_id"]
    messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", TEXT), ("assistant", TEXT)]
    assert messages[1]["usage"]["output_tokens"] == len(TEXT.split())


async def test_stream_true_answers_with_the_sse_stream(server: Server) -> None:
    thread = await new_thread(server.client)
    frames = await read_events(
        server.client,
        f"/v1/threads/{thread}/runs",
        method="POST",
        json={"input": "hello there", "stream": True},
    )
    assert kinds(frames) == ["run.started", "message.delta", "run.completed"]
    assert "".join(f.json["text"] for f in frames if f.event == "message.delta") == "hello there"
    assert_contiguous(frames)


async def test_resume_after_last_event_id_gives_exactly_the_rest(server: Server) -> None:
    thread = await new_thread(server.client)
    run = await start_run(server.client, thread, TEXT)
    url = f"/v1/runs/{run['id']}/events"
    full = await read_events(server.client, url)
    for cut in (1, 3, len(full) - 1):
        by_header = await read_events(server.client, url, headers={"Last-Event-ID": str(cut)})
        by_query = await read_events(server.client, url, params={"after": cut})
        assert [(f.id, f.event, f.data) for f in by_header] == [(f.id, f.event, f.data) for f in full[cut:]]
        assert by_query == by_header
    assert await read_events(server.client, url, headers={"Last-Event-ID": str(len(full))}) == []


async def test_a_dropped_live_stream_resumes_where_it_left_off(settings_for) -> None:
    async with serve(settings_for(model="scripted:echo?delay_ms=20")) as server:
        thread = await new_thread(server.client)
        run = await start_run(server.client, thread, TEXT)
        url = f"/v1/runs/{run['id']}/events"
        first = await read_events(server.client, url, limit=3)
        rest = await read_events(server.client, url, headers={"Last-Event-ID": first[-1].id})
        frames = first + rest
        assert_contiguous(frames)
        assert frames[-1].event == "run.completed"
        assert "".join(f.json["text"] for f in frames if f.event == "message.delta") == TEXT


async def test_many_readers_of_one_run_see_identical_streams(settings_for) -> None:
    async with serve(settings_for(model="scripted:echo?delay_ms=10")) as server:
        thread = await new_thread(server.client)
        run = await start_run(server.client, thread, TEXT)
        url = f"/v1/runs/{run['id']}/events"
        streams = await asyncio.gather(*(read_events(server.client, url) for _ in range(8)))
        reference = [(f.id, f.event, f.data) for f in streams[0]]
        assert reference[-1][1] == "run.completed"
        for frames in streams[1:]:
            assert [(f.id, f.event, f.data) for f in frames] == reference


async def test_every_streamed_event_is_in_the_log(settings_for) -> None:
    """Invariant 1: what a client received is durable, with seqs 1..N and no gaps."""
    async with serve(settings_for(model="scripted:echo?delay_ms=2")) as server:
        thread_ids = [await new_thread(server.client) for _ in range(5)]
        runs = [await start_run(server.client, t, TEXT + " again and again") for t in thread_ids]
        streams = await asyncio.gather(
            *(read_events(server.client, f"/v1/runs/{r['id']}/events") for r in runs)
        )
        async with server.parley.db.session() as session:
            for run, frames in zip(runs, streams, strict=True):
                rows = (
                    await session.execute(
                        select(Event.seq, Event.type, Event.data)
                        .where(Event.run_id == run["id"])
                        .order_by(Event.seq)
                    )
                ).all()
                assert [(str(s), t, d) for s, t, d in rows] == [(f.id, f.event, f.data) for f in frames]
                assert [r[0] for r in rows] == list(range(1, len(rows) + 1))


@pytest.mark.parametrize("bad", ["-1", "abc"])
async def test_bad_after_is_a_clear_4xx(server: Server, bad: str) -> None:
    thread = await new_thread(server.client)
    run = await start_run(server.client, thread, "hi")
    response = await server.client.get(f"/v1/runs/{run['id']}/events", params={"after": bad})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    response = await server.client.get(f"/v1/runs/{run['id']}/events", headers={"Last-Event-ID": bad})
    assert response.status_code == 400


async def test_after_beyond_the_log_is_refused(server: Server) -> None:
    thread = await new_thread(server.client)
    run = await start_run(server.client, thread, "hi")
    await read_events(server.client, f"/v1/runs/{run['id']}/events")
    response = await server.client.get(f"/v1/runs/{run['id']}/events", params={"after": 99})
    assert response.status_code == 400
    assert "99" in response.json()["error"]["message"]


async def test_cancel_closes_the_provider_stream_within_a_second(settings_for) -> None:
    """Invariant 3."""
    provider = ScriptedProvider(turns=[[TextDelta("partial"), Hang()]])
    async with serve(settings_for(model="scripted:hang"), providers={"scripted:hang": provider}) as server:
        thread = await new_thread(server.client)
        run = await start_run(server.client, thread, "wait forever")
        url = f"/v1/runs/{run['id']}/events"
        first = await read_events(server.client, url, limit=2)
        assert first[1].event == "message.delta"
        assert provider.open_streams == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        cancelled = (await server.client.post(f"/v1/runs/{run['id']}/cancel")).json()
        elapsed = loop.time() - started
        assert cancelled["status"] == "cancelled"
        assert provider.open_streams == 0
        assert elapsed < 1.0
        frames = await read_events(server.client, url)
        assert [f.event for f in frames][-1] == "run.cancelled"
        assert sum(f.event.startswith("run.c") for f in frames) == 1
        again = await server.client.post(f"/v1/runs/{run['id']}/cancel")
        assert again.status_code == 200
        assert again.json()["status"] == "cancelled"
        assert await read_events(server.client, url) == frames


async def test_cancels_at_once_end_the_run_once(settings_for) -> None:
    """On PostgreSQL a cancel arriving as the run wrote its terminal event took the same seq:
    a 500 (unique violation), or a deadlock. The final state is now written first, so the
    second writer waits on the run's row and finds it ended."""
    provider = ScriptedProvider(turns=[[TextDelta("partial"), Hang()], [TextDelta("done")]])
    async with serve(settings_for(model="scripted:hang"), providers={"scripted:hang": provider}) as server:
        thread = await new_thread(server.client)
        run = await start_run(server.client, thread, "wait forever")
        url = f"/v1/runs/{run['id']}/events"
        await read_events(server.client, url, limit=2)
        answers = await asyncio.gather(
            *(server.client.post(f"/v1/runs/{run['id']}/cancel") for _ in range(5))
        )
        assert [a.json().get("status", a.text) for a in answers] == ["cancelled"] * 5
        assert provider.open_streams == 0
        frames = await read_events(server.client, url)
        assert [f.event for f in frames] == ["run.started", "message.delta", "run.cancelled"]
        # The run's task went on after the cancel, and let the thread take its next run.
        second = await start_run(server.client, thread, "again")
        frames = await read_events(server.client, f"/v1/runs/{second['id']}/events")
        assert [f.event for f in frames][-1] == "run.completed"


async def test_a_cancel_while_the_run_is_being_set_up_ends_it(settings_for) -> None:
    """A cancel that comes after the run was claimed but before it produces (here its experiment
    variant is being looked up, held by the test) is not lost: the caller gets the cancelled run."""
    provider = ScriptedProvider(turns=[[TextDelta("never")]])
    async with serve(settings_for(model="scripted:p"), providers={"scripted:p": provider}) as server:
        gate = asyncio.Event()

        async def in_a_variant(_tx: object, run: Run, _thread: object) -> None:
            run.variant = "b"  # so the worker looks the variant up: Parley's own hooks

        async def variant_held(_run: Run, assistant: object) -> object:
            await gate.wait()
            return assistant

        server.parley.lifecycle.assign = in_a_variant  # type: ignore[assignment]
        server.parley.worker.apply_variant = variant_held  # type: ignore[union-attr]
        run = await start_run(server.client, await new_thread(server.client), "stop before you start")
        cancel = asyncio.ensure_future(server.client.post(f"/v1/runs/{run['id']}/cancel"))
        await asyncio.sleep(0.3)
        assert not cancel.done()  # it waits for the run to end
        gate.set()
        answer = await cancel
        assert answer.json()["status"] == "cancelled"
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        assert kinds(frames) == ["run.cancelled"]
        assert provider.requests == []  # the model was never called


async def test_no_more_runs_execute_at_once_than_the_setting_allows(settings_for) -> None:
    provider = ScriptedProvider(turns=[[TextDelta("partial"), Hang()]])
    settings = settings_for(model="scripted:hang", max_concurrent_runs=2)
    async with serve(settings, providers={"scripted:hang": provider}) as server:
        runs = [await start_run(server.client, await new_thread(server.client), "wait") for _ in range(4)]
        for run in runs[:2]:
            await read_events(server.client, f"/v1/runs/{run['id']}/events", limit=2)
        await asyncio.sleep(0.2)
        statuses = [(await server.client.get(f"/v1/runs/{r['id']}")).json()["status"] for r in runs]
        assert statuses == ["running", "running", "queued", "queued"]
        assert provider.open_streams == 2
        # A slot freed is taken by the oldest queued run.
        await server.client.post(f"/v1/runs/{runs[0]['id']}/cancel")
        third = await read_events(server.client, f"/v1/runs/{runs[2]['id']}/events", limit=2)
        assert [f.event for f in third] == ["run.started", "message.delta"]
        assert (await server.client.get(f"/v1/runs/{runs[3]['id']}")).json()["status"] == "queued"
        assert provider.open_streams == 2
        for run in runs[1:]:
            await server.client.post(f"/v1/runs/{run['id']}/cancel")


async def test_cancelling_a_finished_run_changes_nothing(server: Server) -> None:
    thread = await new_thread(server.client)
    run = await start_run(server.client, thread, "hello")
    frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    response = await server.client.post(f"/v1/runs/{run['id']}/cancel")
    assert response.json()["status"] == "completed"
    assert await read_events(server.client, f"/v1/runs/{run['id']}/events") == frames


async def test_multitask_reject_enqueue_interrupt(settings_for) -> None:
    async with serve(settings_for(model="scripted:echo?delay_ms=30")) as server:
        thread = await new_thread(server.client)
        first = await start_run(server.client, thread, TEXT)
        rejected = await server.client.post(f"/v1/threads/{thread}/runs", json={"input": "again"})
        assert rejected.status_code == 409
        assert rejected.json()["error"]["code"] == "run_active"

        queued = await start_run(server.client, thread, "second message", multitask="enqueue")
        assert queued["status"] == "queued"
        first_frames = await read_events(server.client, f"/v1/runs/{first['id']}/events")
        second_frames = await read_events(server.client, f"/v1/runs/{queued['id']}/events")
        assert first_frames[-1].event == second_frames[-1].event == "run.completed"
        # The queued run started only after the first one ended.
        runs = [(await server.client.get(f"/v1/runs/{r['id']}")).json() for r in (first, queued)]
        assert runs[0]["finished_at"] <= runs[1]["started_at"]

        long_run = await start_run(server.client, thread, TEXT + " " + TEXT)
        await read_events(server.client, f"/v1/runs/{long_run['id']}/events", limit=2)
        newer = await start_run(server.client, thread, "stop that", multitask="interrupt")
        old_frames = await read_events(server.client, f"/v1/runs/{long_run['id']}/events")
        assert old_frames[-1].event == "run.cancelled"
        assert old_frames[-1].json == {"reason": "interrupted"}
        assert (await server.client.get(f"/v1/runs/{long_run['id']}")).json()["status"] == "interrupted"
        new_frames = await read_events(server.client, f"/v1/runs/{newer['id']}/events")
        assert new_frames[-1].json["text"] == "stop that"


async def test_idempotency_key_returns_the_same_run(server: Server) -> None:
    """Invariant 4."""
    thread = await new_thread(server.client)
    headers = {"Idempotency-Key": "k-1"}
    first = await server.client.post(f"/v1/threads/{thread}/runs", json={"input": "hi"}, headers=headers)
    assert first.status_code == 201
    before = (await server.client.get(f"/v1/threads/{thread}")).json()
    again = await server.client.post(f"/v1/threads/{thread}/runs", json={"input": "hi"}, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = await server.client.post(f"/v1/threads/{thread}/runs", json={"input": "bye"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    # A replay, or a refused one, changes nothing: the thread is as the first request left it.
    assert (await server.client.get(f"/v1/threads/{thread}")).json() == before


async def test_twenty_concurrent_duplicates_create_one_run(server: Server) -> None:
    thread = await new_thread(server.client)
    responses = await asyncio.gather(
        *(
            server.client.post(
                f"/v1/threads/{thread}/runs", json={"input": "once"}, headers={"Idempotency-Key": "same"}
            )
            for _ in range(20)
        )
    )
    assert {r.status_code for r in responses} <= {200, 201}
    assert sorted(r.status_code for r in responses).count(201) == 1
    assert len({r.json()["id"] for r in responses}) == 1
    async with server.parley.db.session() as session:
        count = await session.scalar(select(func.count()).select_from(Run).where(Run.thread_id == thread))
    assert count == 1


async def test_idle_streams_get_pings_and_a_dropped_client_is_released(settings_for) -> None:
    provider = ScriptedProvider(turns=[[TextDelta("thinking"), Hang()]])
    settings = settings_for(model="scripted:hang", sse_ping_seconds=0.2)
    async with serve(settings, providers={"scripted:hang": provider}) as server:
        thread = await new_thread(server.client)
        run = await start_run(server.client, thread, "wait")
        pings = 0
        async with server.client.stream("GET", f"/v1/runs/{run['id']}/events") as response:
            async for line in response.aiter_lines():
                pings += line.startswith(": ping")
                if pings == 2:
                    break
        bus = server.parley.bus
        for _ in range(100):
            if bus.subscriber_count(run["id"]) == 0:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
        assert bus.subscriber_count(run["id"]) == 0  # type: ignore[attr-defined]
        assert server.parley.metrics.sse_streams._value.get() == 0
        await server.client.post(f"/v1/runs/{run['id']}/cancel")


async def test_more_runs_created_at_once_than_the_pool_has_connections(server: Server) -> None:
    """Each creation holds one database connection for its transaction and must not need a
    second: when the experiments list was refreshed on a connection of its own, 100 creations
    at once on PostgreSQL (pool: 40) all waited out the pool's timeout and failed."""
    threads = [await new_thread(server.client) for _ in range(60)]
    server.parley.experiments._forget()  # every creation finds the running experiments stale
    owner = server.parley.local_user
    created = await asyncio.wait_for(
        asyncio.gather(*(server.parley.runs.create(owner, NewRun(t, "hello")) for t in threads)), timeout=25
    )
    assert [was_created for _, was_created in created] == [True] * len(threads)
    assert len({run.id for run, _ in created}) == len(threads)
