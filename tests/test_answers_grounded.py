"""Grounded answers composed from the sources (issue #18): through the HTTP API, with the demo
FAQ and the demo CVs, a small model (``chooses_tools=False``) and a capable one."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from parley.answers.compose import (
    absent_facts,
    answers_yes_or_no,
    paraphrased,
    same_question,
    stands_out,
    unfamiliar,
    unrelated,
)
from parley.answers.followups import in_context
from parley.config import Settings
from parley.knowledge.search import Hit
from parley.providers.base import TextDelta
from parley.providers.scripted import ScriptedProvider
from tests.conftest import serve
from tests.knowledge_data import FAQ, GUIDE, make_demo_cvs
from tests.sse import Frame, new_thread, read_events, start_run

ROOT = Path(__file__).resolve().parents[1]
FAQ_FILE = ROOT / "parley" / "knowledge" / "demo" / "parley-faq.md"
SCAFFOLDING = ("Question:", "Sources:", "Answer briefly", "using only the sources")


def small_model(*replies: str) -> ScriptedProvider:
    """Stands in for the embedded model: it cannot choose tools, so it is not trusted to write."""
    return ScriptedProvider(
        turns=[[TextDelta(r)] for r in replies] or [[TextDelta("Invented.")]], chooses_tools=False
    )


async def ask(server: object, assistant: str, question: str) -> list[Frame]:
    client = server.client  # type: ignore[attr-defined]
    thread = await new_thread(client, assistant)
    run = await start_run(client, thread, question)
    return await read_events(client, f"/v1/runs/{run['id']}/events")


def minilm_faq(settings_for: Callable[..., Settings]) -> Settings:
    """The support assistant on the demo FAQ with MiniLM, as ``make run`` has it, and a small model."""
    return settings_for(
        model="scripted:small", embeddings="minilm", knowledge={"parley-faq": [FAQ_FILE]}, memory=False
    )


def cited_numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\[(\d+)\]", text)]


def assert_citations_match_sources(final: Frame) -> None:
    numbers = cited_numbers(final.json["text"])
    assert numbers, final.json["text"]
    assert all(1 <= n <= len(final.json["sources"]) for n in numbers), (numbers, len(final.json["sources"]))


@pytest.fixture
def faq_settings(settings_for: Callable[..., Settings]) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        return settings_for(embeddings="hash", knowledge={"parley-faq": [FAQ_FILE]}, **overrides)

    return make


async def test_the_cancel_question_gets_the_faq_entrys_answer_not_a_delete(
    faq_settings: Callable[..., Settings],
) -> None:
    model = small_model()
    async with serve(faq_settings(model="scripted:small"), {"scripted:small": model}) as server:
        frames = await ask(server, "support", "How do I cancel a run that is taking too long?")
    final = frames[-1]
    assert final.event == "run.completed"
    text = final.json["text"]
    assert "POST /v1/runs/{id}/cancel" in text
    assert "DELETE" not in text
    assert not any(s in text for s in SCAFFOLDING)
    assert final.json["sources"][0]["title"] == "How do I cancel a run that is taking too long?"
    assert cited_numbers(text) == [1]
    assert model.requests == []  # the server composed it: nothing for a small model to get wrong


async def test_a_capable_model_also_gets_the_entrys_answer_for_an_faq_match(
    faq_settings: Callable[..., Settings],
) -> None:
    model = ScriptedProvider(turns=[[TextDelta("Send DELETE /v1/threads/{id} [1].")]])
    async with serve(faq_settings(model="scripted:big"), {"scripted:big": model}) as server:
        frames = await ask(server, "support", "how can I stop a run that takes too long")
    assert "POST /v1/runs/{id}/cancel" in frames[-1].json["text"]
    assert model.requests == []


async def test_paypal_is_declined_and_the_closest_topics_are_named(
    faq_settings: Callable[..., Settings],
) -> None:
    model = small_model("Yes, Parley can be paid using PayPal.")
    async with serve(faq_settings(model="scripted:small"), {"scripted:small": model}) as server:
        frames = await ask(server, "support", "Can I pay for Parley with PayPal?")
        peru = await ask(server, "support", "What is the capital of Peru?")
    text = frames[-1].json["text"]
    assert text.startswith("I don't know")
    assert '"PayPal"' in text
    assert "The closest topics I can answer about:" in text
    assert "can be paid" not in text
    assert frames[-1].json["sources"] == []  # a decline rests on no source
    assert peru[-1].json["text"].startswith("I don't know")
    assert model.requests == []


async def test_every_answer_about_the_faq_is_an_entry_cited_and_free_of_scaffolding(
    faq_settings: Callable[..., Settings],
) -> None:
    questions = {
        "Which port does Parley use?": "8000",
        "How do I upgrade the database?": "parley db upgrade",
        "My connection dropped, did I lose the answer?": "Last-Event-ID",
        "What does Parley cost?": "Apache 2.0",
    }
    async with serve(faq_settings(model="scripted:small"), {"scripted:small": small_model()}) as server:
        for question, fact in questions.items():
            final = (await ask(server, "support", question))[-1]
            assert fact in final.json["text"], (question, final.json["text"])
            assert_citations_match_sources(final)
            assert not any(s in final.json["text"] for s in SCAFFOLDING)


@pytest.fixture(scope="module")
def demo_cvs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cvs") / "demo-cvs"
    make_demo_cvs(out)
    return out


async def test_who_knows_python_lists_the_three_cvs_that_say_so_and_no_one_else(
    settings_for: Callable[..., Settings], demo_cvs: Path
) -> None:
    model = small_model("Amelia Hartley, Alibaba - Senior Data Scientist, Mentor: Airocellos [14]")
    config = settings_for(embeddings="hash", knowledge={"demo-cvs": [demo_cvs]}, model="scripted:small")
    async with serve(config, {"scripted:small": model}) as server:
        final = (await ask(server, "recruiter", "who knows Python?"))[-1]
        rust = (await ask(server, "recruiter", "Who knows Rust?"))[-1]
        apart = (await ask(server, "recruiter", "who could lead a data team?"))[-1]
    text = final.json["text"]
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    names = {line[2:].split(":")[0].split(" [")[0].strip() for line in lines}
    assert {n.split(" ")[0] + " " + n.split(" ")[1] for n in names} == {
        "Amelia Hartley",
        "Rahul Mehta",
        "Tomás García",
    }, text
    assert all("Python" in line for line in lines), text
    assert "Airocellos" not in text
    assert "Alibaba" not in text
    assert_citations_match_sources(final)
    assert len(final.json["sources"]) == 3
    assert rust.json["text"].startswith("I don't know")
    assert '"Rust"' in rust.json["text"]
    # Each word is in some CV, never all in one: the reply must not say the CVs lack them.
    assert apart.json["text"] == 'I don\'t know: no document mentions "lead", "data" and "team" together.'
    assert model.requests == []


async def test_who_has_done_audits_is_about_audits(
    settings_for: Callable[..., Settings], demo_cvs: Path
) -> None:
    """ "Who has done audits?" was declined: "my knowledge base says nothing about "done"". A
    list question's auxiliary verbs ("done", "been") are not what it asks about."""
    model = small_model()
    config = settings_for(embeddings="hash", knowledge={"demo-cvs": [demo_cvs]}, model="scripted:small")
    async with serve(config, {"scripted:small": model}) as server:
        final = (await ask(server, "recruiter", "Who has done audits?"))[-1]
    text = final.json["text"]
    assert text.startswith("1 match in the documents I have:\n- Daniel Okafor - Chartered Accountant"), text
    assert_citations_match_sources(final)


async def test_the_best_fit_for_a_role_is_about_the_role(
    settings_for: Callable[..., Settings], demo_cvs: Path
) -> None:
    """ "Which candidate is the best fit for a frontend role?" was declined with "my knowledge
    base says nothing about "best", "fit" or "frontend"": how a list question judges ("best
    fit", "most qualified") is not what it asks about."""
    model = small_model()
    config = settings_for(embeddings="hash", knowledge={"demo-cvs": [demo_cvs]}, model="scripted:small")
    async with serve(config, {"scripted:small": model}) as server:
        devops = (await ask(server, "recruiter", "Which candidate is the best fit for a DevOps role?"))[-1]
        frontend = (await ask(server, "recruiter", "Which candidate is the best fit for a frontend role?"))[
            -1
        ]
    assert devops.json["text"].startswith("1 match in the documents I have:\n- Marcus Chen"), devops.json[
        "text"
    ]
    assert_citations_match_sources(devops)
    assert frontend.json["text"] == 'I don\'t know: my knowledge base says nothing about "frontend".'
    assert model.requests == []


async def test_a_name_with_a_possessive_is_that_name(
    settings_for: Callable[..., Settings], demo_cvs: Path
) -> None:
    """ "summarise Amelia Hartley's CV" was declined: "my knowledge base says nothing about
    "Hartley's"", as if the possessive were part of her name. With MiniLM, as ``make run`` has it."""
    model = small_model()
    config = settings_for(embeddings="minilm", knowledge={"demo-cvs": [demo_cvs]}, model="scripted:small")
    async with serve(config, {"scripted:small": model}) as server:
        final = (await ask(server, "recruiter", "summarise Amelia Hartley's CV"))[-1]
        colour = (await ask(server, "recruiter", "what is Amelia Hartley's favourite colour?"))[-1]
    # Her CV is the question's document, and it says nothing about colours.
    assert colour.json["text"].startswith("I don't know"), colour.json["text"]
    text = final.json["text"]
    assert not text.startswith("I don't know"), text
    assert "Hartley's" not in text
    assert final.json["sources"][0]["title"].startswith("Amelia Hartley"), final.json["sources"]
    assert_citations_match_sources(final)


async def test_the_second_one_after_a_list_is_that_document(
    settings_for: Callable[..., Settings], demo_cvs: Path
) -> None:
    """After "who knows Python?", "tell me more about the second one" is about the second CV
    listed, and only that one; it was declined, with that very candidate among the "closest
    topics". With MiniLM, as ``make run`` has it."""
    model = small_model()
    config = settings_for(embeddings="minilm", knowledge={"demo-cvs": [demo_cvs]}, model="scripted:small")
    async with serve(config, {"scripted:small": model}) as server:
        thread = await new_thread(server.client, "recruiter")
        answers = []
        for text in ("who knows Python?", "tell me more about the second one", "and the last one?"):
            run = await start_run(server.client, thread, text)
            answers.append((await read_events(server.client, f"/v1/runs/{run['id']}/events"))[-1])
    listed = [
        line[2:].split(":")[0] for line in answers[0].json["text"].splitlines() if line.startswith("- ")
    ]
    assert len(listed) == 3, answers[0].json["text"]
    for final, name in ((answers[1], listed[1]), (answers[2], listed[2])):
        text = final.json["text"]
        assert not text.startswith("I don't know"), text
        assert {s["title"] for s in final.json["sources"]} == {name}, (name, final.json["sources"])
        assert name.split(" - ")[0] in text, (name, text)
        assert_citations_match_sources(final)
    assert model.requests == []


async def test_a_small_model_gets_the_most_relevant_sentences_cited(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "guide.md").write_text(GUIDE)
    model = small_model("Roses need a lot of sun, 12 hours.")
    config = settings_for(
        embeddings="hash", knowledge={"parley-faq": [tmp_path / "guide.md"]}, model="scripted:small"
    )
    async with serve(config, {"scripted:small": model}) as server:
        final = (await ask(server, "support", "How much sun do tomatoes need?"))[-1]
    text = final.json["text"]
    assert text.startswith("Tomatoes need six hours of sun a day and deep watering twice a week [1].")
    assert "12 hours" not in text
    assert_citations_match_sources(final)
    assert model.requests == []


async def test_a_capable_models_unsupported_sentences_are_dropped(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "guide.md").write_text(GUIDE)
    model = ScriptedProvider(
        turns=[
            [
                TextDelta("Tomatoes need six hours of sun "),
                TextDelta("a day [1]. They also need 12 hours of darkness, says Dr. Green [2]. "),
                TextDelta("Water them deeply twice a week [7]."),
            ]
        ]
    )
    config = settings_for(
        embeddings="hash", knowledge={"parley-faq": [tmp_path / "guide.md"]}, model="scripted:big"
    )
    async with serve(config, {"scripted:big": model}) as server:
        frames = await ask(server, "support", "How much sun do tomatoes need?")
    text = frames[-1].json["text"]
    assert len(model.requests) == 1
    assert "six hours of sun a day [1]." in text
    assert "12 hours" not in text
    assert "Green" not in text
    assert "Water them deeply twice a week [1]." in text  # [7] matched no source: the supporting one is cited
    assert "".join(f.json["text"] for f in frames if f.event == "message.delta") == text
    assert_citations_match_sources(frames[-1])


async def test_when_nothing_a_capable_model_wrote_is_supported_the_extract_is_shown(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "guide.md").write_text(GUIDE)
    model = ScriptedProvider(turns=[[TextDelta("Question: How much sun? Bananas love 3 moons of Jupiter.")]])
    config = settings_for(
        embeddings="hash", knowledge={"parley-faq": [tmp_path / "guide.md"]}, model="scripted:big"
    )
    async with serve(config, {"scripted:big": model}) as server:
        final = (await ask(server, "support", "How much sun do tomatoes need?"))[-1]
    text = final.json["text"]
    assert "Jupiter" not in text
    assert "Question:" not in text
    assert "Tomatoes need six hours of sun a day" in text
    assert_citations_match_sources(final)


async def test_compose_model_lets_a_model_rephrase_an_faq_entry_and_checks_it(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "faq.md").write_text(FAQ)
    (tmp_path / "parley.toml").write_text('[assistants.support.options]\ncompose = "model"\n')
    model = ScriptedProvider(
        turns=[[TextDelta("Annual plans are refunded within 30 days [1]. You can also pay with PayPal [1].")]]
    )
    config = settings_for(
        embeddings="hash",
        knowledge={"parley-faq": [tmp_path / "faq.md"]},
        model="scripted:big",
        config_file=tmp_path / "parley.toml",
    )
    async with serve(config, {"scripted:big": model}) as server:
        final = (await ask(server, "support", "Can I get my money back on an annual plan?"))[-1]
    assert len(model.requests) == 1
    assert final.json["text"] == "Annual plans are refunded within 30 days [1]."


async def test_a_question_about_nothing_the_best_source_says_is_declined(
    faq_settings: Callable[..., Settings],
) -> None:
    model = small_model()
    async with serve(faq_settings(model="scripted:small"), {"scripted:small": model}) as server:
        final = (await ask(server, "support", "How many employees does the company behind Parley have?"))[-1]
        student = (await ask(server, "support", "Is there a discount for students?"))[-1]
    assert final.json["text"].startswith("I don't know"), final.json["text"]
    assert student.json["text"].startswith("I don't know"), student.json["text"]


async def test_a_question_whose_words_the_faq_never_uses_is_declined_with_minilm(
    settings_for: Callable[..., Settings],
) -> None:
    """Half of "fine-tune the model on my own data" is in no entry, and the nearest one (on
    creating an assistant) is far from it by meaning; a short paraphrase with a word the FAQ
    never uses ("remove") is close to its entry's question, and answered."""
    model = small_model()
    async with serve(minilm_faq(settings_for), {"scripted:small": model}) as server:
        tune = (await ask(server, "support", "Can I fine-tune the model on my own data?"))[-1]
        remove = (await ask(server, "support", "how do I remove a conversation"))[-1]
    assert tune.json["text"].startswith("I don't know"), tune.json["text"]
    assert "[assistants." not in tune.json["text"]
    assert "DELETE /v1/threads/{id}" in remove.json["text"], remove.json["text"]
    assert model.requests == []


def test_half_the_words_unknown_declines_unless_close_by_meaning() -> None:
    def hit(similarity: float, question: float | None) -> Hit:
        return Hit(
            "kb",
            "c",
            "d",
            "FAQ",
            "",
            "Q: How do I create my own assistant? A: …",
            0,
            1.0,
            None,
            similarity,
            question,
        )

    terms = ["fine", "tune", "model", "data"]
    assert unfamiliar(terms, ["fine", "tune"], hit(0.22, 0.2), 0.55)
    assert not unfamiliar(terms, ["fine"], hit(0.22, 0.2), 0.55)  # a quarter unknown
    assert not unfamiliar(terms, ["fine", "tune"], hit(0.22, 0.6), 0.55)  # its entry's question is close
    assert not unfamiliar(terms, ["fine", "tune"], hit(0.58, None), 0.55)
    assert not unfamiliar([], [], hit(0.1, None), 0.55)
    # One word the base never uses is half of a two-word question, and as often a synonym.
    assert not unfamiliar(["listen", "interfac"], ["interfac"], hit(0.36, 0.44), 0.55)
    assert unfamiliar(["discount", "student"], ["discount", "student"], hit(0.28, 0.32), 0.55)


def test_the_best_source_must_share_the_questions_own_words() -> None:
    def hit(text: str, n: int = 0) -> Hit:
        return Hit("kb", f"c{n}", f"d{n}", "Parley FAQ", "", text, n, 1.0, None, 0.5)

    data = hit("Q: Where does Parley keep its data? A: In the data directory, .parley by default.")
    cost = hit("Q: What does Parley cost? A: Parley itself is free and open source.", 1)
    found = [data, cost, hit("Q: What is Parley? A: A server.", 2)]
    assert unrelated("How many employees does the company behind Parley have?", data, found)
    assert not unrelated("how can I move the data folder somewhere else", data, found)
    assert not unrelated("Is Parley free?", cost, found)  # "free" is in the entry
    # "What" asks; it says nothing about what: sharing it with "What does Parley cost?" is nothing.
    assert unrelated("What is your customer support phone number?", cost, found)


def test_a_word_found_everywhere_only_because_it_was_asked_about_still_counts() -> None:
    """ "assistants" is in every entry the search found for "what assistants are built in?", and
    in a fifth of the FAQ: it is what the question is about, not the FAQ's own subject. Left
    out, nothing of the question would be in the entry that answers it."""

    def hit(text: str, n: int = 0) -> Hit:
        return Hit("kb", f"c{n}", f"d{n}", "Parley FAQ", "", text, n, 1.0, None, 0.49)

    builtin = hit("Q: Which assistants come with Parley? A: Four: general, support, recruiter and shop.")
    found = [
        builtin,
        hit("Q: How do I create my own assistant? A: Describe the assistant in a TOML file.", 1),
        hit("Q: What if I send a message while the assistant is still answering? A: 409.", 2),
    ]
    question = "what assistants are built in?"
    assert unrelated(question, builtin, found)  # by what the search found alone
    assert not unrelated(question, builtin, found, everywhere=["parley"])
    assert unrelated(question, builtin, found, everywhere=["parley", "assist"])
    data = hit("Q: Where does Parley keep its data? A: In the data directory, .parley by default.")
    others = [
        hit("Q: What does Parley cost? A: Parley is free.", 4),
        hit("Q: What is Parley? A: A server.", 5),
    ]
    employees = "How many employees does the company behind Parley have?"
    assert unrelated(employees, data, [data, *others], everywhere=["parley"])  # "Parley" tells nothing


async def test_what_the_faq_is_about_is_answered_and_the_company_is_not_with_minilm(
    settings_for: Callable[..., Settings],
) -> None:
    """On the demo FAQ: "what assistants are built in?" gets the entry listing them (its search
    found "assistant" in every passage, which once made it look like a word about nothing); a
    new user's first question, which shares only "Parley" and "run" (words half the FAQ has)
    with the entry that answers it, is a paraphrase of that entry's question and gets it; and a
    question about the company behind Parley, whose only known word is "Parley" and which is as
    near to two entries' questions, is declined."""
    model = small_model()
    async with serve(minilm_faq(settings_for), {"scripted:small": model}) as server:
        builtin = (await ask(server, "support", "what assistants are built in?"))[-1]
        laptop = (await ask(server, "support", "how do I get parley running on my laptop"))[-1]
        company = (await ask(server, "support", "How many employees does the company behind Parley have?"))[
            -1
        ]
    assert "recruiter" in builtin.json["text"], builtin.json["text"]
    assert "make run" in laptop.json["text"], laptop.json["text"]
    assert company.json["text"].startswith("I don't know"), company.json["text"]
    assert model.requests == []


async def test_an_entry_that_may_not_be_the_question_is_named_with_the_next_ones_with_minilm(
    settings_for: Callable[..., Settings],
) -> None:
    """Asked "what happens to my chats when I delete my account?", the search puts first the
    entry on deleting a conversation: the reply says which entry it is, then offers the next
    entries the search found, cited so their answers are a click away. A paraphrase of an
    entry's own question gets the entry's answer alone."""
    model = small_model()
    async with serve(minilm_faq(settings_for), {"scripted:small": model}) as server:
        account = (await ask(server, "support", "what happens to my chats when I delete my account?"))[-1]
        laptop = (await ask(server, "support", "how do I get parley running on my laptop"))[-1]
    text, sources = account.json["text"], account.json["sources"]
    assert text.startswith('The closest entry I have is "How do I delete a conversation?": Send'), text
    offered = re.search(r"Also close: (.+)$", text)
    assert offered is not None, text
    numbers = cited_numbers(offered.group(1))
    assert len(numbers) == 2, text
    assert all(2 <= n <= len(sources) for n in numbers), (numbers, text)
    titles = {sources[n - 1]["title"] for n in numbers}
    assert "How do I delete a conversation?" not in titles, (titles, text)
    assert all(f'"{t}"' in offered.group(1) for t in titles)
    assert_citations_match_sources(account)
    assert laptop.json["text"].startswith("Clone the repository and run `make run`."), laptop.json["text"]
    assert "Also close" not in laptop.json["text"]
    assert model.requests == []


async def test_a_question_in_a_users_words_finds_the_entry_that_lists_them_with_minilm(
    settings_for: Callable[..., Settings],
) -> None:
    """The demo FAQ lists other ways people ask each entry: "where are my conversations
    stored?" (which once got the entry on who can see conversations, named as the closest)
    gets the data entry, named (it was found by another way of asking it, not its own
    question), under its own question in the sources, and nothing of the other ways of asking
    is shown."""
    model = small_model()
    async with serve(minilm_faq(settings_for), {"scripted:small": model}) as server:
        stored = (await ask(server, "support", "where are my conversations stored?"))[-1]
    text, sources = stored.json["text"], stored.json["sources"]
    assert text.startswith(
        'The closest entry I have is "Where does Parley keep its data?": In the data directory, `.parley`'
    ), text
    assert sources[0]["title"] == "Where does Parley keep its data?"
    assert sources[0]["snippet"].startswith("Q: Where does Parley keep its data? A: In the data directory")
    assert model.requests == []


async def test_a_follow_up_question_is_asked_with_the_one_before_it_with_minilm(
    settings_for: Callable[..., Settings],
) -> None:
    """ "how do I move it?", after "where does parley store my data?", was declined: "I found
    nothing about that". A question that refers back with few words of its own is searched for
    with the question before it, unless it is clearly an entry's own question by itself."""
    model = small_model()
    async with serve(minilm_faq(settings_for), {"scripted:small": model}) as server:
        client = server.client

        async def turns(*texts: str) -> str:
            thread = await new_thread(client, "support")
            for text in texts:
                run = await start_run(client, thread, text)
                final = (await read_events(client, f"/v1/runs/{run['id']}/events"))[-1]
                if not final.json["text"].startswith("I don't know"):
                    assert_citations_match_sources(final)
            return str(final.json["text"])

        moved = await turns("where does parley store my data?", "how do I move it?")
        alone = await turns("how do I move it?")
        changed = await turns("what port does parley use?", "can I change it?")
        dropped = await turns("how do I stream a reply?", "what if my connection drops during it?")
        # Read alone, "is it open source?" is about another entry than the port's: the answer
        # is named, and that entry is offered first under it.
        subject = await turns("what port does parley use?", "is it open source?")
    assert "PARLEY_DATA_DIR" in moved, moved
    assert "Also close" not in moved, moved  # read alone, it is about the same entry
    assert alone.startswith("I don't know"), alone
    assert "PARLEY_PORT" in changed, changed
    assert "Last-Event-ID" in dropped, dropped
    assert subject.startswith('The closest entry I have is "Which port does Parley listen on'), subject
    assert 'Also close: "What does Parley cost?" [2]' in subject, subject
    assert model.requests == []


async def test_a_yes_or_no_is_shown_under_the_question_it_answers_with_minilm(
    settings_for: Callable[..., Settings],
) -> None:
    """ "does parley work offline?" is a paraphrase of "Does Parley need an internet
    connection?", whose answer opens "No.": shown alone, that "No." said Parley does not work
    offline. The reply names the question the "No" answers; asked in the entry's own words, the
    answer comes alone."""
    model = small_model()
    async with serve(minilm_faq(settings_for), {"scripted:small": model}) as server:
        offline = (await ask(server, "support", "does parley work offline?"))[-1]
        own = (await ask(server, "support", "Does Parley need an internet connection?"))[-1]
    text = offline.json["text"]
    named = 'The closest entry I have is "Does Parley need an internet connection?": No.'
    assert text.startswith(named), text
    assert_citations_match_sources(offline)
    assert own.json["text"].startswith("No. The default model"), own.json["text"]
    assert model.requests == []


def test_an_answer_opening_with_yes_or_no_answers_only_its_own_question() -> None:
    def entry(answer: str) -> Hit:
        return Hit("kb", "c0", "d0", "FAQ", "", f"Q: Is it free?\nA: {answer}", 0, 1.0, None, 0.5)

    assert answers_yes_or_no(entry("No. It costs nothing to run, though."))
    assert answers_yes_or_no(entry("Yes, under the Apache 2.0 licence."))
    assert not answers_yes_or_no(entry("Nobody pays: it is open source."))
    assert not answers_yes_or_no(entry("It is released under Apache 2.0."))
    assert not answers_yes_or_no(Hit("kb", "c1", "d1", "Guide", "", "Yes, it is.", 0, 1.0, None, 0.5))


def test_an_entry_asked_in_its_own_words_needs_no_naming() -> None:
    refund = Hit("kb", "c0", "d0", "FAQ", "", "Q: What is the refund policy? A: 30 days.", 0, 1.0, None, 0.5)
    assert same_question("What is your refund policy?", refund)
    assert not same_question("Can I get my money back?", refund)
    assert not same_question("What is the refund policy for annual plans?", refund)
    passage = Hit("kb", "c1", "d1", "Guide", "", "Refunds take 30 days.", 0, 1.0, None, 0.5)
    assert not same_question("What is the refund policy?", passage)  # a passage has no question


def test_a_question_clearly_nearest_one_entrys_own_question_is_its_paraphrase() -> None:
    def hit(question: float | None, n: int = 0, own: float | None = None) -> Hit:
        own = question if own is None else own
        return Hit("kb", f"c{n}", f"d{n}", "Parley FAQ", "", "Q: … A: …", n, 1.0, None, 0.36, question, own)

    install, data, port = hit(0.62), hit(0.46, 1), hit(0.42, 2)
    assert paraphrased(install, [install, data, port], 0.55)
    assert not paraphrased(install, [install, hit(0.55, 1)], 0.55)  # another entry is about as near
    assert not paraphrased(hit(0.60), [hit(0.60), hit(0.65, 1)], 0.55)  # another is nearer
    assert not paraphrased(hit(0.50), [hit(0.50), hit(0.1, 1)], 0.55)  # not near enough
    assert not paraphrased(install, [install, data], None)  # no embedder to tell
    assert paraphrased(install, [install, hit(None, 1)], 0.55)  # a passage that is no entry
    # Near only one of the other ways of asking it ("replies take forever, how can I speed them
    # up?" for "how do I stop a reply that takes forever?"): found, but not its paraphrase.
    slow, cancel = hit(0.80, own=0.41), hit(0.65, 1)
    assert stands_out(slow, [slow, cancel])
    assert paraphrased(slow, [slow, cancel], 0.55)  # what it is about
    assert not paraphrased(slow, [slow, cancel], 0.55, own=True)  # what its answer is shown under


def test_a_question_nearest_one_entrys_question_by_the_margin_is_about_it() -> None:
    def hit(question: float | None, n: int = 0) -> Hit:
        return Hit("kb", f"c{n}", f"d{n}", "Parley FAQ", "", "Q: … A: …", n, 1.0, None, 0.26, question)

    offline, private, exposed = hit(0.38), hit(0.23, 1), hit(0.25, 2)
    assert stands_out(offline, [offline, private, exposed])  # far from all, nearest it by 0.13
    assert not stands_out(hit(0.58), [hit(0.58), hit(0.56, 1)])  # between two entries
    assert not stands_out(hit(None), [hit(None), private])  # a passage that is no entry


def test_a_name_no_source_has_is_missing_but_an_acronym_is_not() -> None:
    memory = Hit(
        "kb", "c0", "d0", "Parley FAQ", "", "Q: What do I need? A: About 1 GB of memory.", 0, 1.0, None, 0.5
    )
    assert absent_facts("Can I pay for Parley with PayPal?", [memory]) == ["PayPal"]  # Parley: the title
    assert absent_facts("how much RAM does the default model need", [memory]) == []
    assert absent_facts("my client retries POSTs, what then?", [memory]) == []


def test_only_a_question_that_refers_back_with_few_words_of_its_own_follows_up() -> None:
    asked = ["where does parley store my data?"]
    assert in_context("how do I move it?", asked) == "where does parley store my data? how do I move it?"
    assert in_context("and for PostgreSQL?", asked) == "where does parley store my data? and for PostgreSQL?"
    for standalone in (
        "is there a health check endpoint?",
        "how do I make sure that runs finish before a deploy?",
        "does it keep every event of every run in the database with its sequence number?",
    ):
        assert in_context(standalone, asked) == standalone
    assert in_context("how do I move it?", []) == "how do I move it?"
