"""Seed 002's README flow, run verbatim with curl (only the host and port differ)."""

from __future__ import annotations

import asyncio
import json
import subprocess

from parley.providers.base import TextDelta
from parley.providers.scripted import Delay, ScriptedProvider
from tests.conftest import serve
from tests.sse import read_events

FLOW = r"""
set -euo pipefail
curl -s -X POST http://localhost:8000/api/users   -H "Content-Type: application/json"   -d '{"name":"smoke-user"}'
echo
THREAD_ID=$(curl -s -X POST http://localhost:8000/api/threads   -H "Content-Type: application/json"   -d '{"user_id": 1}'   | python3 -c "import sys, json; print(json.load(sys.stdin)['thread_id'])")

echo "THREAD_ID=$THREAD_ID"
RUN_ID=$(curl -s -X POST http://localhost:8000/api/threads/$THREAD_ID/messages   -H "Content-Type: application/json"   -d '{"content":"hello"}'   | python3 -c "import sys, json; print(json.load(sys.stdin)['run_id'])")

echo "RUN_ID=$RUN_ID"
curl http://localhost:8000/api/runs/$RUN_ID
echo
echo ---stream
curl -N http://localhost:8000/api/runs/$RUN_ID/events
echo ---resume
curl -N http://localhost:8000/api/runs/$RUN_ID/events   -H "Last-Event-ID: 10"
echo ---cancel
curl -X POST http://localhost:8000/api/runs/$RUN_ID/cancel
"""


def _frames(text: str) -> list[tuple[str, str, str]]:
    """(id, event, data) of each SSE frame."""
    frames, current = [], {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                frames.append((current.get("id", ""), current.get("event", ""), current.get("data", "")))
            current = {}
        elif ":" in line and not line.startswith(":"):
            key, _, value = line.partition(":")
            current[key] = value.strip()
    return frames


#: Ada Park's CV, one fact a sentence: a capable model's answer restates them, a sentence a delta.
FACTS = [
    "Ada Park greets every customer with a hello in five languages.",
    "She leads the support desk at Harbor Bank in Busan.",
    "She joined Harbor Bank in 2019 after four years at Kelp Telecom.",
    "At Kelp Telecom she answered phone and chat tickets in Korean and English.",
    "She cut the average first reply time from 9 hours to 40 minutes.",
    "She wrote the bank's help centre of 120 articles.",
    "She trains every new agent during a two week onboarding.",
    "She runs a weekly review of the hardest tickets with the product team.",
    "She speaks Korean, English, Japanese, Spanish and French.",
    "She holds a degree in linguistics from Pusan National University.",
    "She volunteers at a literacy charity on weekends.",
    "She uses Zendesk, Jira and SQL every day.",
    "Her customer satisfaction score was 97 percent in 2023.",
    "She mentors two junior agents.",
]


def recruiter(settings_for, tmp_path, **overrides):
    """Seed 002 is the CV recruiter: its threads go to the `recruiter` assistant, which answers
    from its CVs and declines what they do not mention; this one CV mentions "hello"."""
    cv = tmp_path / "ada-park.md"
    cv.write_text("# Ada Park\n\n" + " ".join(FACTS) + "\n")
    return settings_for(embeddings="none", knowledge={"demo-cvs": [cv]}, **overrides)


def restating_model() -> ScriptedProvider:
    """A capable model that restates the CV a sentence at a time, as a model streams."""
    steps: list = []
    for fact in FACTS:
        steps += [TextDelta(word + " ") for word in fact.split()] + [Delay(0.02)]
    return ScriptedProvider(turns=[steps])


async def test_the_seed_readme_curl_flow_works_verbatim(settings_for, tmp_path) -> None:
    async with serve(
        recruiter(settings_for, tmp_path, model="scripted:cv"), {"scripted:cv": restating_model()}
    ) as server:
        script = FLOW.replace("http://localhost:8000", server.url)
        result = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", script], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert json.loads(out.splitlines()[0]) == {"user_id": 2, "name": "smoke-user"}
        run_id = out.split("RUN_ID=")[1].split()[0]
        status = json.loads(out.split("RUN_ID=")[1].splitlines()[1])
        assert status["run_id"] == run_id
        assert status["status"] in {"running", "done"}
        stream = _frames(out.split("---stream")[1].split("---resume")[0])
        events = [event for _, event, _ in stream]
        assert events[:2] == ["run.started", "retrieval"]
        assert events[-2:] == ["final", "done"]
        assert set(events[2:-2]) == {"token"}
        assert [int(i) for i, _, _ in stream[:-1]] == list(range(1, len(stream)))
        # The model's sentences, each checked against the CV and cited as it is let through.
        final = json.loads(stream[-2][2])
        assert "".join(json.loads(data)["token"] for _, _, data in stream[2:-2]) == final["text"]
        assert final["text"].startswith("Ada Park greets every customer with a hello in five languages [1].")
        assert final["text"].endswith("She mentors two junior agents [1].")
        resumed = _frames(out.split("---resume")[1].split("---cancel")[0])
        assert len(stream) > 12
        assert resumed == [frame for frame in stream if frame[0] and int(frame[0]) > 10] + [stream[-1]]
        cancel = json.loads(out.split("---cancel")[1])
        assert cancel["run_id"] == run_id
        assert cancel["status"] == "done"  # the run had finished: cancel changes nothing


async def test_seed_status_and_ids(settings_for, tmp_path) -> None:
    async with serve(recruiter(settings_for, tmp_path)) as server:
        user = (await server.client.post("/api/users", json={"name": "ana"})).json()
        thread = (await server.client.post("/api/threads", json={"user_id": user["user_id"]})).json()
        run = (
            await server.client.post(
                f"/api/threads/{thread['thread_id']}/messages", json={"content": "hello"}
            )
        ).json()
        frames = await read_events(server.client, f"/api/runs/{run['run_id']}/events")
        events = [f.event for f in frames]
        assert events[:2] == ["run.started", "retrieval"]
        assert events[-2:] == ["final", "done"]
        assert set(events[2:-2]) == {"token"}
        final = frames[-2].json
        # scripted:echo repeats the prompt it was given: only what the CV supports is shown, cited.
        assert final["text"] == "".join(f.json["token"] for f in frames[2:-2])
        assert "greets every customer with a hello in five languages" in final["text"]
        assert "[1]" in final["text"]
        assert "Question:" not in final["text"]
        assert [s["title"] for s in final["sources"]] == ["Ada Park"]
        state = (await server.client.get(f"/api/runs/{run['run_id']}")).json()
        assert state["status"] == "done"
        assert state["output"] == final["text"]
        declined = (
            await server.client.post(
                f"/api/threads/{thread['thread_id']}/messages", json={"content": "Who knows Rust?"}
            )
        ).json()
        frames = await read_events(server.client, f"/api/runs/{declined['run_id']}/events")
        assert frames[-2].json["text"].startswith("I don't know")
        assert frames[-2].json["sources"] == []
        missing = await server.client.post("/api/threads", json={"user_id": 999})
        assert missing.status_code == 404
        assert (await server.client.get("/api/runs/run_nope")).status_code == 404


async def test_step_6_on_a_run_shorter_than_10_events_replays_nothing_and_closes(
    settings_for, tmp_path
) -> None:
    """The README's flow as written, on a reply of a few events (the embedded model's "hello")."""
    async with serve(recruiter(settings_for, tmp_path)) as server:
        script = FLOW.replace("http://localhost:8000", server.url)
        result = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", script], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 0, result.stderr
    stream = _frames(result.stdout.split("---stream")[1].split("---resume")[0])
    assert stream[-1][1] == "done"
    assert int(stream[-2][0]) < 10  # a short run: event 10 is past its end
    resumed = result.stdout.split("---resume")[1].split("---cancel")[0]
    assert _frames(resumed) == [("", "done", "{}")]
    assert json.loads(result.stdout.split("---cancel")[1])["status"] == "done"
