"""The price table: shipped defaults, matching, config overrides, and cost on every answer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from parley.config import Settings
from parley.pricing import PriceTable
from tests.conftest import serve
from tests.sse import new_thread, read_events, start_run


def test_shipped_prices_cost_per_million_tokens() -> None:
    prices = PriceTable.load()
    assert prices.cost("openai:gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert prices.cost("anthropic:claude-3-5-haiku", 2_000, 500) == pytest.approx(
        (2_000 * 0.8 + 500 * 4.0) / 1e6
    )


def test_the_most_specific_key_wins_and_options_are_ignored() -> None:
    prices = PriceTable.load()
    assert prices.price("openai:gpt-4o-mini-2024-07-18") == prices.price("openai:gpt-4o-mini")
    assert prices.price("openai:gpt-4o-2024-08-06") == prices.price("openai:gpt-4o")
    assert prices.price("anthropic:claude-3-5-haiku-latest") == prices.price("anthropic:claude-3-5-haiku")
    assert prices.price("gemini:gemini-2.0-flash-001") == prices.price("gemini:gemini-2.0-flash")
    assert prices.price("openai:gpt-4o-mini") != prices.price("openai:gpt-4o")
    assert prices.price("openai:gpt-4o-mini?base_url=https://proxy.example/v1") == prices.price(
        "openai:gpt-4o-mini"
    )


def test_local_models_are_free_and_unknown_ones_unknown() -> None:
    prices = PriceTable.load()
    assert prices.cost("local:smollm2", 500, 500) == 0.0
    assert prices.cost("local:/models/llama.gguf", 500, 500) == 0.0
    assert prices.cost("ollama:llama3.2", 500, 500) == 0.0
    assert prices.cost("openai:my-finetune", 500, 500) is None
    assert prices.cost("openai:gpt-4o-minimal", 500, 500) is None  # a prefix is not a version


def test_the_config_file_overrides_and_adds_prices(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(
        '[prices]\n"openai:gpt-4o-mini" = { input = 1.0, output = 2.0 }\n"openai:llama3.2" = { input = 0, output = 0 }\n'
    )
    prices = PriceTable.load(config)
    assert prices.cost("openai:gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert prices.cost("openai:llama3.2?base_url=http://gpu-box:8000/v1", 10, 10) == 0.0
    assert prices.cost("anthropic:claude-3-5-haiku", 1_000_000, 0) == pytest.approx(0.8)


@pytest.mark.parametrize(
    "table",
    [
        '"x:y" = 3',
        '"x:y" = { input = "cheap" }',
        '"x:y" = { input = -1, output = 1 }',
        '"x:y" = { inptu = 1 }',
        "prices = 5",
    ],
)
def test_a_bad_price_is_a_clear_error(tmp_path: Path, table: str) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(table if table.startswith("prices") else f"[prices]\n{table}\n")
    with pytest.raises(ValueError, match=r"parley\.toml"):
        PriceTable.load(config)


async def test_every_answer_says_what_it_cost(settings_for: Callable[..., Settings], tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(
        '[prices]\n"scripted:echo" = { input = 1_000_000, output = 2_000_000 }\n'
    )  # $1, $2 a token
    async with serve(settings_for(model="scripted:echo", config_file=config)) as server:
        thread = await new_thread(server.client)
        run = await start_run(server.client, thread, "four words right here")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        usage = frames[-1].json["usage"]
        assert usage["output_tokens"] == 4
        assert usage["cost_usd"] == pytest.approx(usage["input_tokens"] * 1.0 + 4 * 2.0)
        assert (await server.client.get(f"/v1/runs/{run['id']}")).json()["usage"]["cost_usd"] == usage[
            "cost_usd"
        ]
