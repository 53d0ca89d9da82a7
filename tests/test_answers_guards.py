"""Chat guards: what a user sees of a model's reply (issue #18), one delta at a time and through the API."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from parley.answers.guards import Guard, scaffolding
from parley.config import Settings
from parley.context import GROUNDING_INSTRUCTION
from parley.providers.base import Finish, TextDelta
from parley.providers.scripted import Hang, ScriptedProvider
from tests.conftest import serve
from tests.knowledge_data import GUIDE
from tests.sse import new_thread, read_events, start_run

INSTRUCTIONS = "You are Parley, a helpful assistant. Answer clearly and concisely."


def tokens(text: str) -> list[str]:
    """Split like a tokenizer streams: a word with its leading space, newlines on their own."""
    return re.findall(r"[^\S\n]*[^\s]+|\n|[^\S\n]+", text)


def shown(text: str, instructions: str = INSTRUCTIONS) -> tuple[str, Guard]:
    """What a user sees of ``text`` streamed through a guard, and the guard."""
    guard = Guard(scaffolding(instructions))
    out = ""
    for delta in tokens(text):
        out += guard.feed(delta)
        if guard.stopped:
            break
    return out + guard.flush(), guard


# -- scaffolding echo ---------------------------------------------------------------------


def test_an_echo_of_the_grounded_prompt_is_dropped_and_the_answer_kept() -> None:
    text, guard = shown(
        "Question: What is your refund policy?\n\n"
        "Answer briefly, using only the sources above, and cite them like [3]. "
        "If they do not answer the question, say you don't know.\n\n"
        "Annual plans are refunded within 30 days [1]."
    )
    assert text == "Annual plans are refunded within 30 days [1]."
    assert guard.stopped is None


def test_a_fake_next_turn_ends_the_reply() -> None:
    text, guard = shown("Annual plans are refunded within 30 days [1].\nQuestion: And monthly?\nAnswer: no")
    assert text.strip() == "Annual plans are refunded within 30 days [1]."
    assert guard.stopped == "echo"
    text, guard = shown("Paris.\n\nUser: and Spain?")
    assert text.strip() == "Paris."
    assert guard.stopped == "echo"


def test_chat_template_markers_end_the_reply_and_never_show() -> None:
    text, guard = shown("Sure thing.<|im_end|>\n<|im_start|>user\nhi")
    assert text == "Sure thing."
    assert guard.stopped == "echo"
    guard = Guard()
    parts = [guard.feed(d) for d in ["Done", ".<", "|im", "_end", "|>"]]
    assert "".join(parts) == "Done."
    assert "<" not in "".join(parts)


def test_the_assistants_own_instructions_are_not_repeated() -> None:
    text, _ = shown("You are Parley, a helpful assistant. Paris is the capital of France.")
    assert text == "Paris is the capital of France."


def test_an_answer_label_is_dropped_and_its_answer_kept() -> None:
    assert shown("Answer: Paris is the capital of France.")[0] == "Paris is the capital of France."
    assert shown("Assistant: Hello! How can I help?")[0] == "Hello! How can I help?"


def test_a_reply_that_only_copies_the_prompt_shows_nothing() -> None:
    prompt = f"Sources: [1] Refunds within 30 days. Question: Refunds? {GROUNDING_INSTRUCTION}"
    text, guard = shown(prompt)
    assert text == ""
    assert guard.report() == {"dropped": 1}


def test_ordinary_text_streams_without_delay() -> None:
    guard = Guard(scaffolding(INSTRUCTIONS))
    assert guard.feed("Paris") == "Paris"
    assert guard.feed(" is the") == " is the"
    assert guard.feed(" capital.") == " capital."
    assert guard.flush() == ""
    assert guard.report() is None


def test_what_could_still_be_an_echo_is_held_then_released() -> None:
    guard = Guard(scaffolding(INSTRUCTIONS))
    assert guard.feed("Answer") == ""
    assert guard.feed(" briefly") == ""  # the start of the grounding instruction
    assert guard.feed(" and warmly:") == "Answer briefly and warmly:"
    guard = Guard(scaffolding(INSTRUCTIONS))
    assert guard.feed("Ques") == ""
    assert guard.flush() == "Ques"


# -- repetition ---------------------------------------------------------------------------


def test_a_repeated_list_item_is_shown_once_and_stops_the_reply() -> None:
    text, guard = shown("1. Golden Retriever\n2. Golden Retriever\n3. Golden Retriever")
    assert text.strip() == "1. Golden Retriever"
    assert guard.stopped == "repetition"


def test_repeats_differing_in_numbering_case_and_punctuation_stop_too() -> None:
    text, guard = shown("- Max!\n* max\n")
    assert text.strip() == "- Max!"
    assert guard.stopped == "repetition"
    text, guard = shown("The cat sat on the mat. The cat sat on the mat. The cat sat")
    assert text == "The cat sat on the mat."
    assert guard.stopped == "repetition"


def test_a_looping_phrase_stops_the_reply() -> None:
    text, guard = shown("It is good and then it is good and then it is good and then it is")
    assert guard.stopped == "repetition"
    assert text.count("and then") < 3
    text, guard = shown("no no no no no no no no no no no no")
    assert guard.stopped == "repetition"
    assert text.split().count("no") <= 4


def test_distinct_lists_and_recurring_headings_pass() -> None:
    reply = "Here are three names:\n1. Max\n2. Buddy\n3. Charlie\n"
    text, guard = shown(reply)
    assert text == reply
    assert guard.report() is None
    table = "Pros:\n- fast\n- cheap\nCons:\n- slow\n- cheap\nPros win."
    assert shown(table)[0] == table
    code = "```\nx = 1\nx = 1\n```\nDone."
    assert shown(code)[0] == code


def test_decimals_and_list_numbers_are_not_sentence_ends() -> None:
    reply = "It is 3.5 km wide.\n1. First\n2. Second"
    assert shown(reply)[0] == reply


# -- through the API ----------------------------------------------------------------------


def general(settings_for: Callable[..., Settings]) -> Settings:
    return settings_for(model="scripted:test")


async def test_a_repeating_model_shows_the_item_once_and_its_stream_is_closed(
    settings_for: Callable[..., Settings],
) -> None:
    steps = [TextDelta(t) for t in tokens("1. Golden Retriever\n2. Golden Retriever\n3. Golden Retriever\n")]
    model = ScriptedProvider(turns=[[*steps, Hang()]])  # a model that would go on for ever
    async with serve(general(settings_for), {"scripted:test": model}) as server:
        thread = await new_thread(server.client, "general")
        run = await start_run(server.client, thread, "three names for a golden retriever puppy")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
        assert model.open_streams == 0
    shown_text = "".join(f.json["text"] for f in frames if f.event == "message.delta")
    assert shown_text.strip() == "1. Golden Retriever"
    assert frames[-1].event == "run.completed"
    assert frames[-1].json["text"].strip() == "1. Golden Retriever"
    assert frames[-1].json["finish_reason"] == "stop"
    assert messages[-1]["content"].strip() == "1. Golden Retriever"


async def test_a_model_echoing_the_grounded_prompt_shows_none_of_it(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "guide.md").write_text(GUIDE)
    echo = (
        "Question: How much sun do tomatoes need?\n"
        f"{GROUNDING_INSTRUCTION.replace('[1]', '[3]')}\n"
        "Tomatoes need six hours of sun a day [1].\n"
        "Question: What about roses?"
    )
    model = ScriptedProvider(turns=[[TextDelta(t) for t in tokens(echo)]])
    settings = settings_for(
        model="scripted:test", embeddings="hash", knowledge={"parley-faq": [tmp_path / "guide.md"]}
    )
    async with serve(settings, {"scripted:test": model}) as server:
        thread = await new_thread(server.client, "support")
        run = await start_run(server.client, thread, "How much sun do tomatoes need?")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
    shown_text = "".join(f.json["text"] for f in frames if f.event == "message.delta")
    for scaffold in ("Question", "Answer briefly", "using only the sources", "cite them like"):
        assert scaffold not in shown_text
        assert scaffold not in frames[-1].json["text"]
    assert shown_text.strip() == "Tomatoes need six hours of sun a day [1]."
    assert model.requests[0].messages[-1].content.endswith(GROUNDING_INSTRUCTION)


async def test_a_reply_cut_by_the_length_limit_says_so_everywhere(
    settings_for: Callable[..., Settings],
) -> None:
    model = ScriptedProvider(turns=[[TextDelta("Golden retrievers are friendly and"), Finish("length")]])
    async with serve(general(settings_for), {"scripted:test": model}) as server:
        thread = await new_thread(server.client, "general")
        run = await start_run(server.client, thread, "Tell me about golden retrievers")
        frames = await read_events(server.client, f"/v1/runs/{run['id']}/events")
        read = (await server.client.get(f"/v1/runs/{run['id']}")).json()
        messages = (await server.client.get(f"/v1/threads/{thread}/messages")).json()["data"]
        body = {"model": "general", "messages": [{"role": "user", "content": "Tell me more"}]}
        completion = (await server.client.post("/v1/chat/completions", json=body)).json()
        chunks = await read_events(
            server.client, "/v1/chat/completions", method="POST", json=body | {"stream": True}
        )
    assert frames[-1].event == "run.completed"
    assert frames[-1].json["finish_reason"] == "length"
    assert read["finish_reason"] == "length"
    assert messages[-1]["finish_reason"] == "length"  # the web UI's note after a reload
    assert completion["choices"][0]["finish_reason"] == "length"
    finishes = [
        c.json["choices"][0]["finish_reason"] for c in chunks if c.data != "[DONE]" and c.json["choices"]
    ]
    assert [f for f in finishes if f] == ["length"]


async def test_a_reply_that_ends_normally_says_stop(settings_for: Callable[..., Settings]) -> None:
    model = ScriptedProvider(turns=[[TextDelta("Hello."), Finish("stop")]])
    async with serve(general(settings_for), {"scripted:test": model}) as server:
        thread = await new_thread(server.client, "general")
        run = await start_run(server.client, thread, "hi")
        await read_events(server.client, f"/v1/runs/{run['id']}/events")
        read = (await server.client.get(f"/v1/runs/{run['id']}")).json()
    assert read["finish_reason"] == "stop"
