"""bench.tools_bfcl reads every BFCL category it finds, live ids included, and scores relevance
(a call expected, with no possible answers) and irrelevance (no call expected) the right way round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import tools_bfcl
from parley.tools.choice import KeywordRouter

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather forecast for a city.",
    "parameters": {"type": "dict", "properties": {"city": {"type": "string", "description": "City name."}}},
}


def _write(folder: Path, category: str, rows: list[dict[str, object]]) -> None:
    (folder / f"BFCL_v4_{category}.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _row(id_: str, question: str) -> dict[str, object]:
    return {"id": id_, "question": [[{"role": "user", "content": question}]], "function": [WEATHER]}


@pytest.fixture
def bfcl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bfcl"
    (folder / "possible_answer").mkdir(parents=True)
    _write(
        folder,
        "live_simple",
        [_row(f"live_simple_{i}-{i}-0", "current weather forecast for the city of Paris") for i in range(4)],
    )
    (folder / "possible_answer" / "BFCL_v4_live_simple.json").write_text(
        "\n".join(
            json.dumps(
                {"id": f"live_simple_{i}-{i}-0", "ground_truth": [{"get_weather": {"city": ["Paris"]}}]}
            )
            for i in range(4)
        )
    )
    _write(
        folder,
        "live_relevance",
        [_row(f"live_relevance_{i}-0-0", "weather forecast for Rome") for i in range(4)],
    )
    _write(folder, "live_irrelevance", [_row(f"live_irrelevance_{i}-0-0", "bake a cake") for i in range(4)])
    monkeypatch.setattr(tools_bfcl, "DATASETS", tmp_path)
    return folder


def test_every_category_in_the_folder_loads_with_live_ids(bfcl: Path) -> None:
    assert tools_bfcl.categories() == ["live_irrelevance", "live_relevance", "live_simple"]
    items = [i for c in tools_bfcl.categories() for i in tools_bfcl.load(c)]
    assert [i.index for i in items[:4]] == [0, 1, 2, 3]
    assert {i.category: i.expects_call for i in items} == {
        "live_irrelevance": False,
        "live_relevance": True,
        "live_simple": True,
    }


def test_relevance_and_irrelevance_are_scored_the_right_way_round(bfcl: Path) -> None:
    items = [i for c in tools_bfcl.categories() for i in tools_bfcl.load(c)]
    router = KeywordRouter(threshold=0.3)
    assert tools_bfcl.router_only(router, items) == {
        "live_irrelevance": 1.0,  # nothing called for "bake a cake"
        "live_relevance": 1.0,  # a call for a weather question, though no answer is given
        "live_simple": 1.0,
    }
    never = KeywordRouter(threshold=2.0)  # calls nothing
    assert tools_bfcl.router_only(never, items) == {
        "live_irrelevance": 1.0,
        "live_relevance": 0.0,
        "live_simple": 0.0,
    }
    tally = tools_bfcl.Tally()
    relevance = [i for i in items if i.category == "live_relevance"]
    tally.add(relevance[0], "get_weather", {"city": "Rome"}, 0.1)
    tally.add(relevance[1], None, None, 0.1)
    assert (tally.called, tally.right_function) == (1, 1)
    assert "called (right)  50.0%" in tally.row("live_relevance")
