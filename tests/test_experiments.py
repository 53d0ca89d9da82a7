"""Experiments: deterministic assignment, definitions (config file and admin API), exposure
on the run and in ``run.started``, the variant's overrides reaching the model, stickiness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from scipy import stats as sp
from sqlalchemy import select

from parley.experiments import ExperimentSpec, Exposure, VariantSpec, bucket, choose, load_config
from parley.providers.scripted import ScriptedProvider
from parley.store.schema import Run
from tests.conftest import Server, serve
from tests.identity import client_as
from tests.sse import new_thread, read_events, start_run

TWO = [VariantSpec(name="control"), VariantSpec(name="treatment")]
THREE = [
    VariantSpec(name="a", weight=70),
    VariantSpec(name="b", weight=20),
    VariantSpec(name="c", weight=10),
]


def split(variants: list[VariantSpec], key: str, users: range, salt: str = "") -> Counter[str]:
    return Counter(choose(variants, key, salt, user).name for user in users)


# -- assignment ---------------------------------------------------------------------------


def test_assignment_is_pinned_so_an_upgrade_never_reshuffles_users() -> None:
    # SHA-256 of "key\x1fsalt\x1fuser", first 8 bytes big-endian / 2**64.
    assert bucket("tone", "", 42) == pytest.approx(0.8716666396195649, abs=1e-15)
    assert [choose(TWO, "tone", "", u).name for u in range(1, 9)] == [
        "treatment", "control", "treatment", "control", "control", "control", "treatment", "control"
    ]  # fmt: skip


def test_assignment_is_the_same_in_another_process_with_another_hash_seed() -> None:
    users = range(1, 1001)
    here = [choose(THREE, "model-swap", "s", u).name for u in users]
    code = (
        "import json; from parley.experiments import VariantSpec, choose\n"
        "v = [VariantSpec(name='a', weight=70), VariantSpec(name='b', weight=20), VariantSpec(name='c', weight=10)]\n"
        "print(json.dumps([choose(v, 'model-swap', 's', u).name for u in range(1, 1001)]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == here


@pytest.mark.parametrize("variants", [TWO, THREE], ids=["50-50", "70-20-10"])
def test_the_split_over_10000_users_is_within_tolerance(variants: list[VariantSpec]) -> None:
    users = range(1, 10_001)
    counts = split(variants, "split-check", users)
    total_weight = sum(v.weight for v in variants)
    for variant in variants:
        share = counts[variant.name] / len(users)
        expected = variant.weight / total_weight
        sigma = (expected * (1 - expected) / len(users)) ** 0.5
        assert abs(share - expected) < 3 * sigma, (variant.name, share, expected)
    chi = sp.chisquare(
        [counts[v.name] for v in variants], [v.weight / total_weight * len(users) for v in variants]
    )
    assert chi.pvalue > 0.001


def test_experiments_and_salts_assign_independently() -> None:
    users = range(1, 10_001)
    first = [choose(TWO, "first", "", u).name for u in users]
    for other_key, salt in (("second", ""), ("first", "reshuffle")):
        other = [choose(TWO, other_key, salt, u).name for u in users]
        table = [[sum(1 for a, b in zip(first, other, strict=True) if (a, b) == (x, y)) for y in ("control", "treatment")] for x in ("control", "treatment")]  # fmt: skip
        assert sp.chi2_contingency(table).pvalue > 0.001, table


# -- definitions ------------------------------------------------------------------------


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_config_file_experiments_are_validated_with_clear_errors(tmp_path: Path) -> None:
    good = write_config(
        tmp_path / "good.toml",
        """
[experiments.tone]
description = "concise vs detailed"
control = "detailed"
[[experiments.tone.variants]]
name = "concise"
instructions = "Answer in one sentence."
temperature = 0.2
[[experiments.tone.variants]]
name = "detailed"
weight = 3
model = "scripted:echo"
""",
    )
    [(spec, status)] = load_config(good)
    assert (spec.key, spec.assistant, spec.control, status) == ("tone", "general", "detailed", "running")
    assert [(v.name, v.weight) for v in spec.variants] == [("concise", 1.0), ("detailed", 3.0)]
    for body, words in [
        ('[experiments.x]\nvariants = [{name = "a"}]', "at least 2"),
        ('[experiments.x]\nvariants = [{name = "a"}, {name = "a"}]', "unique"),
        (
            '[experiments.x]\ncontrol = "z"\nvariants = [{name = "a"}, {name = "b"}]',
            "not one of the variants",
        ),
        ('[experiments.x]\nvariants = [{name = "a", weight = 0}, {name = "b"}]', "greater than 0"),
        ('[experiments.x]\nvariants = [{name = "a", model = "gpt"}, {name = "b"}]', "provider:model"),
        ('[experiments.x]\nvariants = [{name = "a", colour = "red"}, {name = "b"}]', "colour"),
        ('[experiments.X]\nvariants = [{name = "a"}, {name = "b"}]', "key"),
        ('[experiments.x]\nstatus = "stopped"\nvariants = [{name = "a"}, {name = "b"}]', "status"),
    ]:
        with pytest.raises(ValueError, match=words):
            load_config(write_config(tmp_path / "bad.toml", body))


TONE = """
[experiments.tone]
assistant = "general"
salt = "{salt}"
[[experiments.tone.variants]]
name = "concise"
instructions = "Answer in one sentence."
model = "scripted:a"
temperature = 0.2
[[experiments.tone.variants]]
name = "detailed"
instructions = "Answer in depth."
model = "scripted:b"
max_tokens = 64
"""


def providers() -> dict[str, ScriptedProvider]:
    return {"scripted:a": ScriptedProvider("echo", name="scripted:a"), "scripted:b": ScriptedProvider("echo", name="scripted:b")}  # fmt: skip


async def test_each_user_gets_their_variant_and_the_model_sees_its_overrides(
    settings_for, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "parley.toml", TONE.format(salt=""))
    models = providers()
    async with serve(settings_for(config_file=config), providers=dict(models)) as server:
        seen: dict[str, list[str]] = {"concise": [], "detailed": []}
        spec = (await server.client.get("/v1/experiments/tone")).json()
        assert spec["status"] == "running"
        variants = [VariantSpec.model_validate(v) for v in spec["variants"]]
        for i in range(6):
            async with client_as(server, f"user{i}") as client:
                thread = await new_thread(client)
                frames = await read_events(
                    client,
                    f"/v1/threads/{thread}/runs",
                    method="POST",
                    json={"input": "hello there", "stream": True},
                )
                started = frames[0].json
                run = (await client.get(f"/v1/runs/{started['run_id']}")).json()
                user_id = await _user_of(server, started["run_id"])
                expected = choose(variants, "tone", "", user_id).name
                assert started["variant"] == run["variant"] == expected
                assert started["model"] == ("scripted:a" if expected == "concise" else "scripted:b")
                assert frames[-1].event == "run.completed"
                seen[expected].append(thread)
        assert seen["concise"]
        assert seen["detailed"]
        for name, provider, instructions in (("concise", models["scripted:a"], "Answer in one sentence."), ("detailed", models["scripted:b"], "Answer in depth.")):  # fmt: skip
            assert len(provider.requests) == len(seen[name])
            for request in provider.requests:
                assert request.messages[0].role == "system"
                assert request.messages[0].content == instructions
                if name == "concise":
                    assert (request.temperature, request.max_tokens) == (0.2, None)
                else:
                    assert (request.temperature, request.max_tokens) == (None, 64)
        async with server.parley.db.session() as session:
            exposures = (await session.execute(select(Exposure.run_id, Exposure.variant))).all()
            runs = (await session.execute(select(Run.id, Run.variant))).all()
        assert sorted(exposures) == sorted(runs)
        assert len(exposures) == 6


async def _user_of(server: Server, run_id: str) -> int:
    async with server.parley.db.session() as session:
        user_id = await session.scalar(select(Run.user_id).where(Run.id == run_id))
    assert user_id is not None
    return int(user_id)


async def test_a_thread_keeps_its_variant_when_the_definition_changes(settings_for, tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    variants = [VariantSpec(name="concise"), VariantSpec(name="detailed")]
    write_config(config, TONE.format(salt="first"))
    async with serve(settings_for(config_file=config), providers=dict(providers())) as server:
        async with client_as(server, "ana") as client:
            thread = await new_thread(client)
            run = await start_run(client, thread, "hi")
            await read_events(client, f"/v1/runs/{run['id']}/events")
        user_id = await _user_of(server, run["id"])
        before = choose(variants, "tone", "first", user_id).name
        assert (await client_get_run(server, run["id"]))["variant"] == before
    salt = next(
        s for s in (f"s{i}" for i in range(100)) if choose(variants, "tone", s, user_id).name != before
    )
    write_config(config, TONE.format(salt=salt))
    async with serve(settings_for(config_file=config), providers=dict(providers())) as server:
        assert (await server.client.get("/v1/experiments/tone")).json()["salt"] == salt
        async with client_as(server, "ana") as client:
            again = await start_run(client, thread, "and again", multitask="enqueue")
            frames = await read_events(client, f"/v1/runs/{again['id']}/events")
            assert frames[0].json["variant"] == before
            fresh = await new_thread(client)
            other = await start_run(client, fresh, "a new conversation")
            frames = await read_events(client, f"/v1/runs/{other['id']}/events")
            assert frames[0].json["variant"] != before


async def client_get_run(server: Server, run_id: str) -> dict[str, Any]:
    response = await server.client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


# -- the admin API ------------------------------------------------------------------------


EXPERIMENT = {
    "key": "prompt-test",
    "assistant": "general",
    "description": "two prompts",
    "variants": [
        {"name": "control", "weight": 1},
        {"name": "friendly", "weight": 1, "instructions": "Be warm.", "temperature": 0.9},
    ],
}


async def test_admins_create_start_and_stop_experiments(server: Server) -> None:
    created = await server.client.post("/v1/experiments", json=EXPERIMENT)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["status"], body["control"], body["source"]) == ("draft", "control", "api")
    assert body["variants"][1]["instructions"] == "Be warm."

    thread = await new_thread(server.client)
    run = await start_run(server.client, thread, "before the start")
    frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    assert frames[0].json["variant"] is None

    started = (await server.client.post("/v1/experiments/prompt-test/start")).json()
    assert started["status"] == "running"
    assert started["started_at"] is not None
    again = await start_run(server.client, thread, "after the start", multitask="enqueue")
    frames = await read_events(server.client, f"/v1/runs/{again['id']}/events")
    assert frames[0].json["variant"] in ("control", "friendly")

    other = {**EXPERIMENT, "key": "second"}
    assert (await server.client.post("/v1/experiments", json=other)).status_code == 201
    busy = await server.client.post("/v1/experiments/second/start")
    assert busy.status_code == 409
    assert "prompt-test" in busy.json()["error"]["message"]

    stopped = (await server.client.post("/v1/experiments/prompt-test/stop")).json()
    assert stopped["status"] == "stopped"
    assert (await server.client.post("/v1/experiments/prompt-test/stop")).json()["status"] == "stopped"
    after = await start_run(server.client, thread, "after the stop", multitask="enqueue")
    frames = await read_events(server.client, f"/v1/runs/{after['id']}/events")
    assert frames[0].json["variant"] is None
    assert (await server.client.post("/v1/experiments/second/start")).json()["status"] == "running"

    listed = (await server.client.get("/v1/experiments")).json()["data"]
    assert [(e["key"], e["status"]) for e in listed] == [("prompt-test", "stopped"), ("second", "running")]


async def test_bad_definitions_are_refused_and_nothing_is_stored(server: Server) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**EXPERIMENT, "key": "Bad Key"}, 422, "invalid_request"),
        ({**EXPERIMENT, "variants": EXPERIMENT["variants"][:1]}, 422, "invalid_request"),
        ({**EXPERIMENT, "control": "nobody"}, 422, "invalid_request"),
        ({**EXPERIMENT, "assistant": "nobody"}, 422, "unknown_assistant"),
        (
            {**EXPERIMENT, "variants": [{"name": "a", "model": "nosuch:model"}, {"name": "b"}]},
            422,
            "invalid_model",
        ),
        (
            {**EXPERIMENT, "variants": [{"name": "a", "temperature": 7}, {"name": "b"}]},
            422,
            "invalid_request",
        ),
        ({**EXPERIMENT, "surprise": True}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        response = await server.client.post("/v1/experiments", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    assert (await server.client.get("/v1/experiments")).json()["data"] == []
    assert (await server.client.post("/v1/experiments", json=EXPERIMENT)).status_code == 201
    duplicate = await server.client.post("/v1/experiments", json=EXPERIMENT)
    assert duplicate.status_code == 409
    assert (await server.client.post("/v1/experiments/nosuch/start")).status_code == 404
    assert (await server.client.get("/v1/experiments/nosuch/results")).status_code == 404


async def test_experiments_are_for_administrators(server: Server) -> None:
    assert (
        await server.client.post("/v1/experiments", json={**EXPERIMENT, "start": True})
    ).status_code == 201
    async with client_as(server, "bob") as bob:
        for method, path in [
            ("GET", "/v1/experiments"),
            ("POST", "/v1/experiments"),
            ("GET", "/v1/experiments/prompt-test"),
            ("POST", "/v1/experiments/prompt-test/stop"),
            ("GET", "/v1/experiments/prompt-test/results"),
        ]:
            response = await bob.request(method, path, json=EXPERIMENT if method == "POST" else None)
            assert response.status_code == 403, (method, path)
            assert response.json()["error"]["code"] == "forbidden"
        # ...but bob's own runs are part of the experiment.
        thread = await new_thread(bob)
        frames = await read_events(
            bob, f"/v1/threads/{thread}/runs", method="POST", json={"input": "hi", "stream": True}
        )
        assert frames[0].json["variant"] in ("control", "friendly")
    assert (await server.client.get("/v1/experiments/prompt-test")).json()["status"] == "running"


async def test_status_set_through_the_api_survives_a_restart(settings_for, tmp_path: Path) -> None:
    config = write_config(tmp_path / "parley.toml", TONE.format(salt=""))
    settings = settings_for(config_file=config)
    async with serve(settings, providers=dict(providers())) as server:
        assert (await server.client.post("/v1/experiments/tone/stop")).json()["status"] == "stopped"
    async with serve(settings, providers=dict(providers())) as server:
        assert (await server.client.get("/v1/experiments/tone")).json()["status"] == "stopped"
        thread = await new_thread(server.client)
        frames = await read_events(
            server.client, f"/v1/threads/{thread}/runs", method="POST", json={"input": "hi", "stream": True}
        )
        assert frames[0].json["variant"] is None


def test_a_spec_defaults_its_control_to_the_first_variant() -> None:
    spec = ExperimentSpec(key="k", variants=[VariantSpec(name="x"), VariantSpec(name="y")])
    assert spec.control == "x"
