"""The context builder: token budget, turns kept whole, summaries, sources, token counting."""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from parley.app import create_app
from parley.assistants import Assistant
from parley.config import Settings
from parley.context import (
    GROUNDING_INSTRUCTION,
    MEMORY_HEADER,
    SUMMARY_HEADER,
    Budget,
    ContextOptions,
    InvalidContextOptions,
    build_context,
)
from parley.memory import MemoryFact
from parley.providers.base import ProviderError, ProviderRequest, TextDelta
from parley.providers.scripted import ScriptedProvider
from parley.store.schema import Message
from parley.summaries import ThreadSummary, extractive
from parley.tokens import MESSAGE_OVERHEAD, REPLY_OVERHEAD, Tokens
from tests.conftest import Server, serve
from tests.sse import new_thread, read_events

ASSISTANT = Assistant(name="general", description="", instructions="You are a helpful assistant.")
_ids = count()


def message(role: str, content: str, **data: Any) -> Message:
    n = next(_ids)
    return Message(
        id=f"msg_{n:08d}", thread_id="thr_1", role=role, content=content, data=data, created_at=float(n)
    )


def tool_turn(question: str, output: str) -> list[Message]:
    call = {"id": f"call_{next(_ids)}", "name": "lookup", "arguments": json.dumps({"q": question})}
    return [
        message("user", question),
        message("assistant", "", tool_calls=[call]),
        message("tool", output, tool_call_id=call["id"], name="lookup"),
        message("assistant", f"The answer is {output}."),
    ]


def budget(prompt: int, **overrides: int) -> Budget:
    values = {
        "window": prompt,
        "reserve": 0,
        "limit": prompt,
        "summary": 200,
        "memory": 200,
        "memory_top_k": 8,
    }
    values.update(overrides)
    return Budget(**values)


def counter() -> Any:
    return Tokens().counter(ScriptedProvider("echo"))


def build(history: Sequence[Message], prompt: int, **kwargs: Any) -> Any:
    return build_context(
        ASSISTANT, history, thread_id="thr_1", counter=counter(), budget=budget(prompt), **kwargs
    )


def words(n: int, word: str = "lorem") -> str:
    return " ".join([word] * n)


def test_a_short_thread_is_sent_whole_in_order() -> None:
    history = [message("user", "hello"), message("assistant", "hi there"), message("user", "how are you?")]
    context = build(history, 4096)
    assert [(m.role, m.content) for m in context.request.messages] == [
        ("system", ASSISTANT.instructions),
        ("user", "hello"),
        ("assistant", "hi there"),
        ("user", "how are you?"),
    ]
    assert context.dropped_messages == 0
    expected = REPLY_OVERHEAD + sum(
        MESSAGE_OVERHEAD + ScriptedProvider("echo").count_tokens(m.content) for m in context.request.messages
    )
    assert context.prompt_tokens == expected


def test_a_long_thread_keeps_the_newest_turns_that_fit_and_the_latest_message() -> None:
    history = []
    for i in range(50):
        history += [
            message("user", f"question {i} " + words(30)),
            message("assistant", f"answer {i} " + words(30)),
        ]
    history.append(message("user", "and the last question?"))
    context = build(history, 600)
    sent = context.request.messages
    assert context.prompt_tokens <= 600
    assert sent[-1].content == "and the last question?"
    kept = [m.content.split(" ")[1] for m in sent[1:-1]]
    turns = len(kept) // 2
    assert kept == [str(n) for n in range(50 - turns, 50) for _ in "qa"], (
        "a contiguous run of the newest turns"
    )
    assert context.dropped_messages == 101 - 1 - len(sent[1:-1])
    assert context.dropped_messages > 0


def test_the_latest_user_message_is_sent_even_when_it_alone_exceeds_the_budget() -> None:
    history = [message("user", "old"), message("assistant", "reply"), message("user", words(500))]
    context = build(history, 100)
    assert [m.role for m in context.request.messages] == ["system", "user"]
    assert context.request.messages[-1].content == words(500)


def test_a_tool_call_is_kept_or_dropped_with_its_result() -> None:
    history = tool_turn("first", words(40, "alpha")) + tool_turn("second", words(40, "beta"))
    history.append(message("user", "thanks"))
    sizes = [build(history, n).request.messages for n in range(60, 400, 5)]
    for sent in sizes:
        calls = {c.id for m in sent for c in m.tool_calls}
        results = {m.tool_call_id for m in sent if m.role == "tool"}
        assert calls == results
    assert any(len(s) == 6 for s in sizes), "the budget range covers keeping exactly one tool turn"


def server_tool_turn(question: str, output: str) -> list[Message]:
    """A turn whose tools the server ran: one assistant message keeps the calls and outputs."""
    record = {
        "id": f"call_{next(_ids)}",
        "name": "lookup",
        "arguments": json.dumps({"q": question}),
        "step": 1,
    }
    return [
        message("user", question),
        message(
            "assistant", f"The answer is {output}.", tool_calls=[{**record, "output": {"found": output}}]
        ),
    ]


def test_tools_the_server_ran_are_sent_back_as_calls_and_results() -> None:
    history = server_tool_turn("first", "alpha") + server_tool_turn("second", "beta")
    history.append(message("user", "and now?"))
    sent = build(history, 4000).request.messages
    assert [m.role for m in sent] == ["system", *(["user", "assistant", "tool", "assistant"] * 2), "user"]
    assert json.loads(sent[3].content) == {"found": "alpha"}
    assert sent[3].tool_call_id == sent[2].tool_calls[0].id
    # Under a tight budget the older tool turn goes whole: never a call without its result.
    for n in range(40, 200, 5):
        tight = build(history, n).request.messages
        assert {c.id for m in tight for c in m.tool_calls} == {
            m.tool_call_id for m in tight if m.role == "tool"
        }
        assert tight[-1].content == "and now?"


turn_shapes = st.lists(
    st.tuples(st.integers(1, 60), st.integers(0, 2), st.integers(0, 80)), min_size=1, max_size=12
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=turn_shapes, prompt=st.integers(30, 1500), latest=st.integers(1, 200))
def test_budget_invariants_hold_for_any_thread(
    shapes: list[tuple[int, int, int]], prompt: int, latest: int
) -> None:
    history: list[Message] = []
    for question, tools, answer in shapes:
        history.append(message("user", words(question, "q")))
        for _ in range(tools):
            call = {"id": f"call_{next(_ids)}", "name": "lookup", "arguments": "{}"}
            history.append(message("assistant", "", tool_calls=[call]))
            history.append(message("tool", words(answer, "t"), tool_call_id=call["id"]))
        history.append(message("assistant", words(answer, "a")))
    history.append(message("user", words(latest, "latest")))
    context = build(history, prompt)
    sent = context.request.messages
    assert sent[-1].content == words(latest, "latest")
    calls = {c.id for m in sent for c in m.tool_calls}
    assert calls == {m.tool_call_id for m in sent if m.role == "tool"}
    mandatory = build([history[-1]], 0).prompt_tokens
    assert context.prompt_tokens <= max(prompt, mandatory)
    kept = sent[1:-1]
    ids = [m.id for m in history[:-1]]
    contents = [(m.role, m.content) for m in history[:-1]]
    tail = contents[len(contents) - len(kept) :] if kept else []
    assert [(m.role, m.content) for m in kept] == tail, "the kept history is the newest part of the thread"
    assert len(ids) - len(kept) == context.dropped_messages


def fact(text: str, kind: str = "profile") -> MemoryFact:
    return MemoryFact(
        id=f"mem_{next(_ids)}", kind=kind, key=text.lower(), value=text, text=text, created_at=0.0
    )


def test_the_summary_goes_in_the_system_message_and_facts_in_the_latest_turn() -> None:
    summary = ThreadSummary(text="- user: We planned a trip to Kyoto in May.", messages=12)
    history = [message("user", "what should I pack?")]
    facts = [fact("Name: Ana", "name"), fact("Allergic to peanuts")]
    context = build(history, 4096, summary=summary, facts=facts)
    system, latest = context.request.messages[0].content, context.request.messages[-1].content
    assert (
        system == f"{ASSISTANT.instructions}\n\n{SUMMARY_HEADER}\n- user: We planned a trip to Kyoto in May."
    )
    assert latest == f"{MEMORY_HEADER}\n- Name: Ana\n- Allergic to peanuts\n\nwhat should I pack?"
    assert context.summarized_messages == 12
    assert len(context.facts) == 2


def test_what_changes_per_message_leaves_the_prompt_prefix_untouched() -> None:
    """Facts and sources vary with each question; the rest must stay byte-identical for prompt caches."""
    history = [message("user", "hello"), message("assistant", "hi"), message("user", "question one")]
    summary = ThreadSummary(text="- user: Earlier we talked about tea.", messages=4)
    one = build(history, 4096, summary=summary, facts=[fact("Name: Ana", "name")])
    two = build(
        history,
        4096,
        summary=summary,
        facts=[fact("Lives in Porto"), fact("Likes jazz")],
        sources=[{"title": "Tea", "text": "Green tea is steamed."}],
    )
    assert one.request.messages[:-1] == two.request.messages[:-1]
    assert one.request.messages[-1] != two.request.messages[-1]


def test_memory_is_capped_by_its_own_budget() -> None:
    facts = [fact(f"Fact number {i} " + words(10)) for i in range(20)]
    context = build_context(
        ASSISTANT,
        [message("user", "hi")],
        thread_id="thr_1",
        counter=counter(),
        budget=budget(4096, memory=60),
        facts=facts,
    )
    assert 1 <= len(context.facts) < 20
    block = context.request.messages[-1].content.split(MEMORY_HEADER)[1].rsplit("\n\n", 1)[0]
    assert counter().text(block) <= 60


def test_sources_are_numbered_in_the_latest_user_turn_and_trimmed_from_the_end() -> None:
    sources = [
        {"title": "Returns", "text": "Items can be returned within 30 days."},  # most relevant first
        {"title": "Shipping", "text": "Orders ship in two days. " + words(300)},
    ]
    history = [message("user", "hi"), message("assistant", "hello"), message("user", "can I return a lamp?")]
    roomy = build(history, 4096, sources=sources)
    latest = roomy.request.messages[-1].content
    assert latest.index("[1] Returns\nItems can be returned") < latest.index("[2] Shipping")
    assert latest.index("[2] Shipping") < latest.index("Question: can I return a lamp?")
    assert latest.endswith(GROUNDING_INSTRUCTION)
    assert roomy.sources == 2
    tight = build(history, 150, sources=sources)
    assert tight.sources == 1
    assert "Shipping" not in tight.request.messages[-1].content
    assert tight.prompt_tokens <= 150


def test_budget_is_the_window_minus_the_reserve_capped_by_the_budget_setting() -> None:
    settings_ = Settings(context_window=8192, context_budget=4096, context_reserve_tokens=1024)
    assert Budget.of(ContextOptions(), settings_).prompt == 4096
    small = Budget.of(ContextOptions(context_window=2048), settings_)
    assert (small.window, small.reserve, small.prompt) == (2048, 512, 1536)
    own = Budget.of(ContextOptions(context_window=2048, reserve_tokens=100, context_budget=9000), settings_)
    assert own.prompt == 1948


def test_invalid_context_options_fail_at_start_naming_the_assistant(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[assistants.tiny]\ninstructions = "x"\noptions = {context_window = "big"}\n')
    with pytest.raises(InvalidContextOptions, match="tiny"):
        create_app(Settings(data_dir=tmp_path, config_file=config, model="scripted:echo"))


class CharTokens(ScriptedProvider):
    """A provider with its own tokenizer: one token per character."""

    def count_tokens(self, text: str) -> int:
        return len(text)


def test_counting_uses_the_provider_tokenizer_when_it_has_one() -> None:
    tokens = Tokens()
    exact = tokens.counter(CharTokens("echo"))
    assert exact.exact
    assert exact.text("hello world") == 11
    estimate = tokens.counter(ScriptedProvider("echo"))
    assert not estimate.exact
    assert estimate.text("hello world") == 3


def test_estimates_are_calibrated_by_what_the_provider_reports() -> None:
    tokens = Tokens()
    provider = ScriptedProvider("echo", name="openai:some-model")
    text = words(400)
    estimate = tokens.counter(provider).text(text)
    assert estimate == (len(text) + 3) // 4
    for _ in range(20):
        tokens.observe(provider, estimated_raw=estimate, reported=round(estimate * 1.3))
    assert tokens.counter(provider).text(text) == pytest.approx(estimate * 1.3, rel=0.02)
    tokens.observe(CharTokens("echo"), estimated_raw=500, reported=50)
    assert tokens.counter(CharTokens("echo")).ratio == 1.0, "an exact tokenizer is not recalibrated"


def test_extractive_summary_keeps_informative_sentences_within_its_cap() -> None:
    messages = [
        message("user", "Hi! I am planning a trip to Kyoto with my sister in early May."),
        message("assistant", "Sounds great. Ok."),
        message("user", "Thanks!"),
        message("user", "Our budget is 3000 euros and we want to see the Fushimi Inari shrine at dawn."),
        message("assistant", "Fushimi Inari opens 24 hours, so arriving at 6am avoids the crowds entirely."),
    ]
    text = extractive("", messages, 80, counter().text)
    lines = text.splitlines()
    assert counter().text(text) <= 80
    assert any("Kyoto" in line for line in lines)
    assert any("3000 euros" in line for line in lines)
    assert not any("Thanks" in line or "Sounds great" in line for line in lines)
    assert all(line.startswith(("- user: ", "- assistant: ")) for line in lines)
    kyoto = next(i for i, line in enumerate(lines) if "Kyoto" in line)
    budget_line = next(i for i, line in enumerate(lines) if "3000 euros" in line)
    assert kyoto < budget_line, "in conversation order"


def test_extractive_summary_rolls_old_lines_out_as_new_ones_arrive() -> None:
    summary = ""
    for topic in ("Kyoto temples", "Berlin museums", "Lisbon trams", "Oslo fjords", "Cairo pyramids"):
        batch = [message("user", f"Tell me about {topic} and their opening hours, prices and history.")]
        batch.append(
            message("assistant", f"{topic} are remarkable: hours vary by season, prices are moderate.")
        )
        summary = extractive(summary, batch, 60, counter().text)
    assert "Cairo" in summary
    assert "Kyoto" not in summary
    assert counter().text(summary) <= 60


# -- over the API ------------------------------------------------------------------------


def tight(**options: Any) -> Assistant:
    return Assistant(
        name="tight",
        description="",
        instructions="Be brief.",
        options={"context_budget": 400, "summary_tokens": 80, "memory_tokens": 60, **options},
    )


async def chat(server: Server, thread: str, text: str) -> dict[str, Any]:
    frames = await read_events(
        server.client, f"/v1/threads/{thread}/runs", method="POST", json={"input": text, "stream": True}
    )
    assert frames[-1].event == "run.completed", frames[-1].data
    await server.parley.context.idle()
    completed: dict[str, Any] = frames[-1].json
    return completed


async def test_a_long_thread_stays_within_budget_with_a_stored_rolling_summary(settings_for: Any) -> None:
    provider = ScriptedProvider("echo")
    async with serve(settings_for(), providers={"scripted:echo": provider}) as server:
        server.parley.assistants.add(tight())
        thread = await new_thread(server.client, "tight")
        reported = []
        before_last: tuple[str, int] | None = None
        for i in range(24):
            if i == 23:  # the summary the last run's prompt is built with
                async with server.parley.db.session() as session:
                    stored_summary = await session.get(ThreadSummary, thread)
                assert stored_summary is not None
                before_last = (stored_summary.text, stored_summary.messages)
            done = await chat(
                server, thread, f"Message {i}: my project code is P{i:03d}. " + words(25, f"w{i}")
            )
            reported.append(done["usage"]["input_tokens"])
        assert max(reported) <= 400
        assert reported[-1] < 2 * reported[8], "bounded, not growing with the thread"
        assert all(
            r.messages[-1].content.startswith(f"Message {i}:") for i, r in enumerate(provider.requests)
        )
        async with server.parley.db.session() as session:
            summary = await session.get(ThreadSummary, thread)
            stored = (await session.scalars(select(Message).where(Message.role == "assistant"))).all()
        assert summary is not None
        assert summary.method == "extractive"
        assert summary.messages >= 10
        assert before_last is not None
        assert provider.requests[-1].messages[0].content.endswith(before_last[0])
        last = max(stored, key=lambda m: m.created_at)
        assert last.data["context"]["prompt_tokens"] <= 400
        assert last.data["context"]["summarized_messages"] == before_last[1]


class Summarizer(ScriptedProvider):
    """A summary model: answers every request with a fixed summary, or fails."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__("script", name="scripted:summarizer")
        self.fail = fail

    async def stream(self, request: ProviderRequest) -> Any:
        self.requests.append(request)
        if self.fail:
            raise ProviderError("summary model is down", retryable=False)
        yield TextDelta("- The user is collecting project codes.")


@pytest.mark.parametrize("fail", [False, True], ids=["model", "model-down"])
async def test_a_summary_model_writes_the_summary_and_extractive_is_the_fallback(
    settings_for: Any, fail: bool
) -> None:
    summarizer = Summarizer(fail=fail)
    async with serve(settings_for(), providers={"scripted:summarizer": summarizer}) as server:
        server.parley.assistants.add(tight(summary_model="scripted:summarizer"))
        thread = await new_thread(server.client, "tight")
        for i in range(12):
            await chat(server, thread, f"Message {i}: code P{i:03d}. " + words(25, f"w{i}"))
        async with server.parley.db.session() as session:
            summary = await session.get(ThreadSummary, thread)
        assert summary is not None
        assert summarizer.requests, "the summary model was asked"
        assert "Message 0: code P000" in summarizer.requests[0].messages[-1].content
        if fail:
            assert summary.method == "extractive"
            assert "P000" in summary.text
        else:
            assert summary.method == "model"
            assert summary.text == "- The user is collecting project codes."
