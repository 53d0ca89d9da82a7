"""``GET /v1/experiments/{key}/results``: per-variant figures from real runs and ratings,
checked against numbers computed independently (the test's own record, scipy, numpy)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from scipy import stats as sp
from sqlalchemy import update

from parley.experiments import Exposure
from parley.providers.base import ProviderError, TextDelta
from parley.providers.scripted import ScriptedProvider
from parley.store.schema import Run, User, new_id
from tests.conftest import Server, serve
from tests.identity import client_as
from tests.sse import new_thread, read_events

EXPERIMENT = {
    "key": "models",
    "description": "a cheap model against a dear one",
    "start": True,
    "variants": [
        {"name": "cheap", "model": "scripted:cheap"},
        {"name": "dear", "model": "scripted:dear,scripted:backup"},
    ],
}
COST = {"cheap": 0.001, "dear": 0.004}
USERS = 24
# Fewer failures in a row than the route's breaker needs to open: each of these runs falls
# back once, and the runs after them are served by the variant's own model again.
FLAKY_CALLS = 2


def providers() -> dict[str, Any]:
    outage = [[ProviderError("bad gateway", status=502)]] * FLAKY_CALLS
    return {
        "scripted:cheap": ScriptedProvider("echo", name="scripted:cheap"),
        "scripted:dear": ScriptedProvider(
            turns=[*outage, [TextDelta("a considered answer")]], name="scripted:dear"
        ),
        "scripted:backup": ScriptedProvider(turns=[[TextDelta("a stand-in answer")]], name="scripted:backup"),
    }


async def test_results_per_variant_match_an_independent_computation(settings_for) -> None:
    async with serve(settings_for(), providers=providers()) as server:
        assert (await server.client.post("/v1/experiments", json=EXPERIMENT)).status_code == 201
        record: list[dict[str, Any]] = []
        for i in range(USERS):
            async with client_as(server, f"user{i:02d}") as client:
                thread = await new_thread(client)
                frames = await read_events(
                    client,
                    f"/v1/threads/{thread}/runs",
                    method="POST",
                    json={"input": f"question {i}", "stream": True},
                )
                variant = frames[0].json["variant"]
                fell_back = any(f.event == "provider.fallback" for f in frames)
                done = frames[-1].json
                # A fixed pattern: the dear model is liked more often than the cheap one.
                rating = [1, 1, -1, 1][i % 4] if variant == "dear" else [1, -1, -1, 1, -1][i % 5]
                if i % 6 == 5:
                    rating = 0  # not rated
                if rating:
                    response = await client.post(
                        f"/v1/messages/{done['message_id']}/feedback", json={"rating": rating}
                    )
                    assert response.status_code == 201
                record.append(
                    {
                        "run": frames[0].json["run_id"],
                        "variant": variant,
                        "fallback": fell_back,
                        "rating": rating,
                    }
                )
        # Cost comes from the providers' prices; the scripted ones are free, so set it here.
        async with server.parley.db.transaction() as session:
            for row in record:
                run = await session.get(Run, row["run"])
                assert run is not None
                assert run.usage is not None
                run.usage = {**run.usage, "cost_usd": COST[row["variant"]]}
                row["usage"] = run.usage

        response = await server.client.get("/v1/experiments/models/results")
        assert response.status_code == 200
        results = response.json()

    assert sum(r["fallback"] for r in record) == FLAKY_CALLS
    assert all(r["variant"] == "dear" for r in record if r["fallback"])
    variants = {v["name"]: v for v in results["variants"]}
    assert list(variants) == ["cheap", "dear"]
    assert (results["control"], variants["cheap"]["control"], variants["dear"]["control"]) == (
        "cheap",
        True,
        False,
    )

    counted: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"up": 0, "down": 0, "latency": [], "ttft": [], "cost": []}
    )
    for row in record:
        if row["fallback"]:
            continue
        entry = counted[row["variant"]]
        entry["up"] += row["rating"] == 1
        entry["down"] += row["rating"] == -1
        entry["latency"].append(row["usage"]["latency_ms"])
        entry["ttft"].append(row["usage"]["ttft_ms"])
        entry["cost"].append(row["usage"]["cost_usd"])

    for name, figures in variants.items():
        mine = [r for r in record if r["variant"] == name]
        expected = counted[name]
        rated = expected["up"] + expected["down"]
        assert figures["users"] == figures["exposures"] == len(mine)
        assert figures["runs"] == {"completed": len(mine)}
        assert (figures["up"], figures["down"], figures["rated"]) == (expected["up"], expected["down"], rated)
        assert figures["thumbs_up_rate"] == pytest.approx(expected["up"] / rated)
        ci = sp.binomtest(expected["up"], rated).proportion_ci(method="wilson")
        assert figures["interval"] == pytest.approx([ci.low, ci.high])
        assert figures["latency_ms"]["mean"] == pytest.approx(np.mean(expected["latency"]))
        assert figures["latency_ms"]["p95"] == pytest.approx(np.percentile(expected["latency"], 95))
        assert figures["ttft_ms"]["p95"] == pytest.approx(np.percentile(expected["ttft"], 95))
        assert figures["cost_usd"]["per_run"] == pytest.approx(COST[name])
        assert figures["cost_usd"]["total"] == pytest.approx(COST[name] * len(expected["cost"]))
        assert figures["cost_usd"]["per_positive_rating"] == pytest.approx(
            COST[name] * len(expected["cost"]) / expected["up"]
        )
        fallback = [r for r in mine if r["fallback"]]
        assert figures["fallback"] == {
            "runs": len(fallback),
            "up": sum(r["rating"] == 1 for r in fallback),
            "down": sum(r["rating"] == -1 for r in fallback),
        }

    cheap, dear = counted["cheap"], counted["dear"]
    table = [[cheap["up"], cheap["down"]], [dear["up"], dear["down"]]]
    chi2, p, _, _ = sp.chi2_contingency(table, correction=False)
    versus = variants["dear"]["vs_control"]
    assert versus["p_value"] == pytest.approx(p)
    assert versus["z"] ** 2 == pytest.approx(chi2)
    assert versus["difference"] == pytest.approx(
        dear["up"] / (dear["up"] + dear["down"]) - cheap["up"] / (cheap["up"] + cheap["down"])
    )
    assert variants["cheap"]["vs_control"] is None

    users = [len([r for r in record if r["variant"] == v]) for v in ("cheap", "dear")]
    srm = results["srm"]
    assert srm["unit"] == "users"
    assert srm["observed"] == {"cheap": users[0], "dear": users[1]}
    assert srm["p_value"] == pytest.approx(sp.chisquare(users).pvalue)


async def seed_exposures(server: Server, key: str, counts: dict[str, int]) -> None:
    """Exposures written straight into the store: one user (and run) each."""
    async with server.parley.db.transaction() as session:
        users = [User(name=f"{key}-{i}") for i in range(sum(counts.values()))]
        session.add_all(users)
        await session.flush()
        names = [name for name, n in counts.items() for _ in range(n)]
        session.add_all(
            Exposure(
                run_id=new_id("run"),
                experiment_key=key,
                variant=name,
                user_id=user.id,
                thread_id=new_id("thr"),
            )
            for name, user in zip(names, users, strict=True)
        )


@pytest.mark.parametrize(
    ("counts", "mismatch"),
    [
        ({"a": 520, "b": 480}, False),
        ({"a": 580, "b": 420}, True),
        ({"a": 3, "b": 1}, None),  # too few users to tell
    ],
)
async def test_sample_ratio_mismatch_is_flagged_on_a_skewed_split(
    server: Server, counts: dict[str, int], mismatch: bool | None
) -> None:
    body = {"key": "split", "variants": [{"name": "a"}, {"name": "b"}]}
    assert (await server.client.post("/v1/experiments", json=body)).status_code == 201
    await seed_exposures(server, "split", counts)
    srm = (await server.client.get("/v1/experiments/split/results")).json()["srm"]
    reference = sp.chisquare(list(counts.values()))
    assert srm["observed"] == counts
    assert srm["chi_square"] == pytest.approx(reference.statistic)
    assert srm["p_value"] == pytest.approx(reference.pvalue)
    assert srm["mismatch"] is mismatch


async def test_srm_uses_the_weights(server: Server) -> None:
    body = {"key": "weighted", "variants": [{"name": "a", "weight": 9}, {"name": "b", "weight": 1}]}
    assert (await server.client.post("/v1/experiments", json=body)).status_code == 201
    await seed_exposures(server, "weighted", {"a": 450, "b": 50})
    srm = (await server.client.get("/v1/experiments/weighted/results")).json()["srm"]
    assert srm["expected_share"] == {"a": 0.9, "b": 0.1}
    assert srm["mismatch"] is False
    assert srm["p_value"] == pytest.approx(1.0)


async def test_an_experiment_with_no_traffic_has_empty_results(server: Server) -> None:
    body = {"key": "quiet", "variants": [{"name": "a"}, {"name": "b"}]}
    assert (await server.client.post("/v1/experiments", json=body)).status_code == 201
    results = (await server.client.get("/v1/experiments/quiet/results")).json()
    assert results["srm"]["p_value"] is None
    for variant in results["variants"]:
        assert (variant["users"], variant["rated"], variant["thumbs_up_rate"], variant["interval"]) == (
            0,
            0,
            None,
            None,
        )
        assert variant["latency_ms"] == {"mean": None, "p95": None}
    assert results["variants"][1]["vs_control"] is None


async def test_a_deleted_thread_stays_in_the_split(server: Server) -> None:
    body = {"key": "kept", "start": True, "variants": [{"name": "a"}, {"name": "b"}]}
    assert (await server.client.post("/v1/experiments", json=body)).status_code == 201
    thread = await new_thread(server.client)
    await read_events(
        server.client, f"/v1/threads/{thread}/runs", method="POST", json={"input": "hi", "stream": True}
    )
    assert (await server.client.delete(f"/v1/threads/{thread}")).status_code == 204
    variants = (await server.client.get("/v1/experiments/kept/results")).json()["variants"]
    assert sum(v["users"] for v in variants) == 1
    assert sum(v["runs"].get("deleted", 0) for v in variants) == 1
    async with server.parley.db.transaction() as session:
        await session.execute(update(Exposure).values(variant="retired"))
    variants = (await server.client.get("/v1/experiments/kept/results")).json()["variants"]
    assert [v["name"] for v in variants] == ["a", "b", "retired"]
    assert variants[2]["weight"] is None
