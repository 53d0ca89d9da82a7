"""The scripted provider's route forms: echo, bench and a JSON script (``PARLEY_MODEL=scripted:...``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from parley.providers.base import (
    ChatMessage,
    Delta,
    Finish,
    ProviderError,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from parley.providers.scripted import SERVED_KEEPS, ScriptedProvider


def asking(text: str) -> ProviderRequest:
    return ProviderRequest(messages=[ChatMessage("system", "be brief"), ChatMessage("user", text)])


async def play(provider: ScriptedProvider, request: ProviderRequest) -> list[Delta]:
    return [delta async for delta in provider.stream(request)]


def text_of(deltas: list[Delta]) -> list[str]:
    return [d.text for d in deltas if isinstance(d, TextDelta)]


async def test_echo_repeats_the_last_user_message_word_by_word() -> None:
    deltas = await play(ScriptedProvider.from_spec("echo"), asking("where  is my\norder"))
    assert text_of(deltas) == ["where", " is", " my", " order"]
    usage = next(d for d in deltas if isinstance(d, Usage))
    assert usage.output_tokens == 4
    assert deltas[-1] == Finish("stop")


async def test_a_served_scripted_provider_keeps_only_its_latest_requests() -> None:
    """``PARLEY_MODEL=scripted:echo`` serves for as long as the server runs: it must not keep
    every request it answered (a 20-minute soak grew ~1 MB a minute by them)."""
    served = ScriptedProvider.from_spec("echo")
    for i in range(SERVED_KEEPS + 50):
        await play(served, asking(f"question {i}"))
    assert len(served.requests) == SERVED_KEEPS
    assert served.requests[-1].messages[-1].content == f"question {SERVED_KEEPS + 49}"
    scripted_in_a_test = ScriptedProvider("echo")
    for i in range(SERVED_KEEPS + 1):
        await play(scripted_in_a_test, asking(f"question {i}"))
    assert len(scripted_in_a_test.requests) == SERVED_KEEPS + 1


async def test_bench_streams_its_number_of_tokens_with_its_delay() -> None:
    started = time.monotonic()
    deltas = await play(ScriptedProvider.from_spec("bench?tokens=5&delay_ms=20"), asking("go"))
    assert text_of(deltas) == [" tok0", " tok1", " tok2", " tok3", " tok4"]
    assert time.monotonic() - started >= 5 * 0.02
    assert next(d for d in deltas if isinstance(d, Usage)).output_tokens == 5


async def test_a_json_script_plays_a_turn_per_call_and_repeats_the_last(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [
                [{"text": "Let me look."}, {"tool_call": {"name": "search", "arguments": {"q": "lamp"}}}],
                [{"delay_ms": 30}, {"text": "Found it."}],
                [{"error": {"message": "overloaded", "retryable": True, "status": 529}}],
            ]
        )
    )
    provider = ScriptedProvider.from_spec(f"script?path={script}")
    first = await play(provider, asking("a lamp?"))
    assert text_of(first) == ["Let me look."]
    (call,) = [d for d in first if isinstance(d, ToolCallDelta)]
    assert (call.name, json.loads(call.arguments)) == ("search", {"q": "lamp"})
    assert first[-1] == Finish("tool_calls")
    started = time.monotonic()
    assert text_of(await play(provider, asking("and?"))) == ["Found it."]
    assert time.monotonic() - started >= 0.03
    for _ in range(2):  # the last turn repeats
        with pytest.raises(ProviderError) as failure:
            await play(provider, asking("again"))
        assert (failure.value.message, failure.value.retryable, failure.value.status) == (
            "overloaded",
            True,
            529,
        )


async def test_a_hang_step_waits_until_the_stream_is_cancelled(tmp_path: Path) -> None:
    script = tmp_path / "hang.json"
    script.write_text(json.dumps([[{"text": "partial"}, {"hang": True}]]))
    provider = ScriptedProvider.from_spec(f"script?path={script}")
    seen: list[Delta] = []

    async def consume() -> None:
        async for delta in provider.stream(asking("wait")):
            seen.append(delta)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    assert text_of(seen) == ["partial"]
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.open_streams == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("chatty", "unknown scripted mode"),
        ("script", r"needs \?path="),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScriptedProvider.from_spec(spec)


def test_a_script_that_is_not_a_list_of_turns_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "bad.json"
    script.write_text(json.dumps({"text": "hi"}))
    with pytest.raises(ValueError, match="a JSON list of turns"):
        ScriptedProvider.from_spec(f"script?path={script}")
    script.write_text(json.dumps([[{"shout": "hi"}]]))
    with pytest.raises(ValueError, match="unknown script step"):
        ScriptedProvider.from_spec(f"script?path={script}")
