"""The agent loop of a run: build the context, stream the model, run tools, append events.

``run_agent`` is what a worker runs inside a run's task (``parley.runs.worker``), with the
collaborators it needs passed in (``Agent``). Each step here appends events through
``agent.log``; the worker owns the terminal event.

With tools, a model that chooses tools itself gets them natively and the loop goes on
while it calls them (up to the step limit); for a model that cannot (``chooses_tools =
False``), the server picks the tools from the user's message and the model only fills
the arguments it cannot read from the words itself, and references ("it", "the first
one") resolve against what the thread has shown (``parley.answers.references``). Either way
every call goes through the same validation and provenance checks (``parley.tools.calls``),
and the reply after tools is the tools' own summaries or a model's text checked against
their results (``parley.answers.replies``): never their JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from parley import events as ev
from parley import passthrough
from parley.answers.arithmetic import calculation
from parley.answers.attachments import attached_hits, wants_summary
from parley.answers.check import citations
from parley.answers.compose import (
    SUPPORT_THRESHOLD,
    TRUST_SIMILARITY,
    SentenceGate,
    absent_facts,
    answers_yes_or_no,
    compose,
    is_list_question,
    list_words,
    named_document,
    paraphrased,
    qa_pair,
    same_question,
    stands_out,
    unfamiliar,
    unrelated,
)
from parley.answers.followups import follows_up, in_context
from parley.answers.guards import Guard, scaffolding
from parley.answers.references import (
    Item,
    Resolution,
    Shown,
    choices_data,
    listed,
    mentions,
    named_by,
    naming,
    not_there,
    nothing_shown,
    ordinal,
    points_at,
    question,
    resolve,
)
from parley.answers.remembered import NOT_TOLD, about_me, introduction, recollection, statements
from parley.answers.replies import Gate, evidence, summaries
from parley.events import EventSink
from parley.facts import extract as extract_facts
from parley.knowledge.grounding import (
    NO_ANSWER,
    Retrieved,
    declined,
    prompt_source,
    retrieve,
    small_talk,
    small_talk_reply,
    source_json,
)
from parley.knowledge.search import Hit
from parley.memory import Stated
from parley.providers.base import (
    ChatMessage,
    Delta,
    Fallback,
    Finish,
    ProviderRequest,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from parley.runs.state import RunState
from parley.store.schema import new_id
from parley.threads import history
from parley.tools.base import Tool, ToolContext, Tools
from parley.tools.calls import Outcome, assemble, execute, rejected, shown_arguments
from parley.tools.choice import (
    EMBEDDING_MODEL,
    Choice,
    HybridRouter,
    essential,
    fill_request,
    ground_text,
    parse_arguments,
    plan,
    stems,
    tool_document,
    without,
)
from parley.tools.provenance import Seen

if TYPE_CHECKING:
    from parley.context import ContextBuilder
    from parley.knowledge.bases import Knowledge
    from parley.metrics import Metrics
    from parley.store.db import Database


@dataclass(frozen=True)
class Agent:
    """What a run's agent loop works with, passed in by the worker."""

    db: Database
    #: Where the run's events go (``parley.events.EventLog``).
    log: EventSink
    context: ContextBuilder
    metrics: Metrics
    tools: Tools | None = None
    #: The knowledge bases assistants retrieve from.
    knowledge: Knowledge | None = None


async def run_agent(agent: Agent, state: RunState) -> None:
    prepared = await prepare(agent, state)
    if prepared is None:  # answered without the model (nothing in the knowledge bases fits)
        await agent.log.flush()
        return
    request = passthrough.apply(prepared, state.run.options)
    assert state.assistant is not None
    assert state.route is not None
    tools = agent.tools
    client_tools = passthrough.client_tools(state.run.options)
    if tools is None or not state.assistant.tools or client_tools:
        _, fragments = await stream_turn(agent, state, request)
        if client_tools:
            for call in passthrough.report(state, fragments):
                agent.log.append(state.run.id, ev.TOOL_CALL, call)
        estimate_usage(state, request, state.text)
    else:
        toolbox = tools.select(state.assistant.tools)
        seen = await seen_in_thread(agent, state, tools)
        ctx = tools.context(
            agent.db, thread_id=state.run.thread_id, user_id=state.run.user_id, run_id=state.run.id
        )
        if state.route.primary.chooses_tools:
            await tool_loop(agent, state, request, toolbox, ctx, seen)
        else:
            await server_chosen_tools(agent, state, toolbox, ctx, seen)
        if state.tool_calls:
            state.message_data["tool_calls"] = state.tool_calls
    await agent.log.flush()


async def prepare(agent: Agent, state: RunState) -> ProviderRequest | None:
    """The request for the first model turn: instructions, memory, retrieved sources (the run's
    attached files first, for any assistant), summary and history (``parley.context``).

    ``None`` when the server has answered already (``parley.answers.compose``): the assistant
    has knowledge bases and nothing in them is about the question, or the answer is composed
    from the sources (an FAQ entry, a list of matching documents, or, for a model too small
    to write reliably, the most relevant sentences). A capable model rephrases the sources
    instead, and ``state.gate`` lets through only the sentences they support.
    """
    assert state.assistant is not None
    assert state.route is not None
    sources: list[dict[str, str]] = []
    hits: list[Hit] = []
    attached = await attached_hits(agent.db, state.run, state.run.input)
    if not (state.assistant.knowledge_bases or attached or state.route.primary.chooses_tools):
        if (kind := small_talk(state.run.input)) is not None:
            # A small model asked who it is invents someone ("your friendly parceler"), and
            # greeted invents a setting ("Welcome to my world of magic"): the assistant's own
            # greeting says what it is.
            _answer(agent, state, small_talk_reply(kind, state.assistant), "small_talk")
            return None
        if (worked := calculation(state.run.input)) is not None:
            # "what is 12 times 7?" got "… = 90 days": the server does the arithmetic.
            _answer(agent, state, worked, "calculated")
            return None
        if (introduced := await _introduction(agent, state)) is not None:
            # "Hi, I'm Sam": a small model answered "Hi there! I'm Sam, the friendly AI chatbot".
            _answer(agent, state, introduced, "introduced")
            return None
        if about_me(state.run.input) and (recalled := await _recollection(agent, state)) is not None:
            # Given the user's facts, a small model takes them for its own ("Hi, I'm Ana"), so
            # they stay out of its prompt; what the user said is said back by the server.
            _answer(agent, state, recalled, "remembered")
            return None
    if state.assistant.knowledge_bases or attached:
        question, document = state.run.input, None
        searched: Retrieved | None = None  # a follow-up's own search, when it stands alone
        read_alone: Hit | None = None  # a follow-up asked with the one before: its own best entry
        if not attached and ordinal(question) is not None:
            # "tell me more about the second one", after a list: about that document only.
            async with agent.db.session() as session:
                question, document = listed(question, await history(session, state.run.thread_id)) or (
                    question,
                    None,
                )
        elif not attached and follows_up(question):
            # "how do I move it?", after "where does parley store my data?": asked with it.
            async with agent.db.session() as session:
                messages = await history(session, state.run.thread_id)
            asked = [m.content for m in messages if m.role == "user" and m.run_id != state.run.id]
            joined = in_context(question, asked)
            if joined != question:
                # Unless it is clearly an entry's own question ("what if my connection drops
                # during it?"), whatever "it" was before.
                alone = await retrieve(
                    agent.knowledge, state.assistant, question, run_options=state.run.options
                )
                best = alone.hits[0] if alone.hits else None
                if best is not None and paraphrased(best, alone.found, alone.familiar):
                    searched = alone
                else:
                    question, read_alone = joined, (alone.found[0] if alone.found else None)
        listing = not attached and document is None and is_list_question(question)
        search = partial(
            retrieve,
            agent.knowledge,
            state.assistant,
            question,
            run_options=state.run.options,
            attached=attached,
        )
        if searched is not None and not listing:
            retrieved = searched  # searched already, as it stands
        else:
            retrieved = await search(listing=listing, document=document)
        if not (attached or listing or document) and (about := named_document(question, retrieved.found)):
            # "summarise Amelia Hartley's CV": about that document alone, whatever words of the
            # question ("summarise", "CV") the documents never use.
            document = about
            retrieved = await search(document=document)
        offered = read_alone is not None and not (document or listing) and _offer(retrieved, read_alone)
        hits = retrieved.hits
        state.sources = [source_json(h) for h in hits]
        agent.log.append(state.run.id, ev.RETRIEVAL, {"sources": state.sources})
        missing = (
            absent_facts(question, [*hits, *retrieved.found])
            if hits
            else unmentioned(list_words(question), retrieved)
            if listing
            else []
        )
        # A list question whose words the documents all have, only never together.
        apart = list_words(question) if listing and not hits and not missing else []
        ranked = (state.run.options or {}).get("retrieval") != "all"
        best = hits[0] if hits and ranked and not listing and not attached else None
        trust = float(state.assistant.options.get("trust_similarity", TRUST_SIMILARITY))
        off_topic = (
            best is not None
            # A paraphrase of an entry's questions stands out from the others by the margin.
            and not stands_out(best, retrieved.found)
            and (
                unrelated(question, best, retrieved.found, trust, retrieved.common)
                # A summary of the document the question names uses words no document has
                # ("summarise Amelia Hartley's CV"); "her favourite colour" is still unknown.
                or (
                    not (document and wants_summary(question))
                    and retrieved.familiar is not None
                    and unfamiliar(retrieved.terms, retrieved.unknown, best, retrieved.familiar)
                )
            )
        )
        if not hits or missing or off_topic:
            # A list question's closest documents are people who do not match: name none.
            _answer(
                agent,
                state,
                *declined(state.assistant, question, [] if listing else retrieved.closest, missing, apart),
            )
            return None
        entry = ranked and qa_pair(hits[0].text) is not None and _compose_mode(state) != "model"
        if listing or entry or not _writes(state):
            named = best is not None and (
                offered
                or (
                    (
                        not paraphrased(best, retrieved.found, retrieved.familiar, own=True)
                        or answers_yes_or_no(best)
                    )
                    and not same_question(question, best)
                )
            )
            composed = compose(
                question, hits, listing=listing, ranked=ranked, exact=retrieved.exact, named=named
            )
            if composed is None:
                _answer(agent, state, *declined(state.assistant, question, retrieved.closest))
            else:
                _answer(agent, state, composed.text, composed.kind)
            return None
        sources = [prompt_source(hit) for hit in hits]
    context = await agent.context.build(state.run, state.assistant, state.route.primary, sources=sources)
    state.message_data["context"] = context.info()
    # The answer cites only the sources that fit the prompt (and the first, which a fallback
    # extract cites when none did).
    del state.sources[max(context.sources, 1 if sources else 0) :]
    if sources:
        extract = compose(state.run.input, hits[: context.sources] or hits[:1], ranked=ranked)
        fallback = (
            extract.text if extract is not None else str(state.assistant.options.get("no_answer", NO_ANSWER))
        )
        state.gate = SentenceGate(sources[: context.sources], _support_threshold(state), fallback=fallback)
    return replace(context.request, **state.assistant.sampling())


def _offer(retrieved: Retrieved, read_alone: Hit) -> bool:
    """A follow-up asked with the question before it ("is it open source?" after "what port
    does parley use?") may have changed the subject: when, read alone, its best FAQ entry is
    another one than the joined question's, that entry becomes the second source, offered
    under the answer ("Also close: "What does Parley cost?" [2]"). True when it was."""
    hits = retrieved.hits
    if not hits or qa_pair(read_alone.text) is None or read_alone.chunk_id == hits[0].chunk_id:
        return False
    retrieved.hits = [hits[0], read_alone, *(h for h in hits[1:] if h.chunk_id != read_alone.chunk_id)]
    return True


def unmentioned(words: Sequence[str], retrieved: Retrieved) -> list[str]:
    """Those of a list question's ``words`` that no chunk has ("PhD"), all of them when the
    search could not tell (no knowledge base)."""
    if not retrieved.terms:
        return list(words)
    return [w for w in words if set(stems(w)) & set(retrieved.unknown)]


def _answer(agent: Agent, state: RunState, text: str, kind: str) -> None:
    """The run's whole answer, composed by the server (no model wrote it).

    The run's sources (``run.completed``, the message) are those up to the last one the
    answer cites: none for a decline, which rests on no source."""
    del state.sources[max(citations(text), default=0) :]
    state.text = text
    state.message_data["composed"] = kind
    if state.first_token is None:
        state.first_token = time.perf_counter()
        agent.metrics.ttft_seconds.labels(state.run.assistant).observe(state.first_token - state.started)
    agent.log.append(state.run.id, ev.MESSAGE_DELTA, {"text": text})


async def _introduction(agent: Agent, state: RunState) -> str | None:
    """The reply to a message that only introduces the user (``answers.remembered``)."""
    assert state.assistant is not None
    if not extract_facts(state.run.input):
        return None
    remembering = await agent.context.memory_on(state.assistant, state.run.user_id)
    return introduction(state.run.input, remembering=remembering)


#: Every remembered fact is read for a question about the user (``Memory.recall``'s ``k``).
RECALL_ALL = 1000


async def _recollection(agent: Agent, state: RunState) -> str | None:
    """The reply to a question about what the user said of themselves (``answers.remembered``):
    their remembered facts, when memory is on, and what they said in this conversation."""
    assert state.assistant is not None
    run = state.run
    remembering = await agent.context.memory_on(state.assistant, run.user_id)
    stated: dict[str, Stated] = {}
    if remembering:
        async with agent.db.read() as reader:
            for fact in await agent.context.memory.recall(reader, run.user_id, run.input, RECALL_ALL):
                stated[fact.key] = fact
    async with agent.db.session() as session:
        for message in await history(session, run.thread_id):
            if message.role == "user":
                stated.update((fact.key, fact) for fact in extract_facts(message.content))
    return recollection(run.input, list(stated.values()), remembering=remembering)


def _writes(state: RunState) -> bool:
    """Whether the model writes grounded answers (``compose`` option: ``auto`` lets a model that
    chooses its own tools write, ``model`` always, FAQ entries too, ``extractive`` never)."""
    assert state.route is not None
    mode = _compose_mode(state)
    return mode == "model" or (mode == "auto" and state.route.primary.chooses_tools)


def _compose_mode(state: RunState) -> str:
    assert state.assistant is not None
    return str(state.assistant.options.get("compose", "auto"))


def _support_threshold(state: RunState) -> float:
    assert state.assistant is not None
    return float(state.assistant.options.get("support_threshold", SUPPORT_THRESHOLD))


async def stream_turn(
    agent: Agent,
    state: RunState,
    request: ProviderRequest,
    *,
    separate: bool = False,
    gate: Gate | None = None,
) -> tuple[str, list[ToolCallDelta]]:
    """Stream one model turn: the model's text, and its tool-call fragments, are returned; what
    may be shown of the text becomes ``message.delta`` events.

    The text goes through a ``Guard`` (``parley.answers.guards``): no echo of the prompt's
    scaffolding, no degenerate repetition. When it stops the reply, leaving the stream closes
    the provider's, and ``message_data["guard"]`` says why. Then through a gate, when there is
    one: ``state.gate`` checks a grounded answer against its sources, ``gate`` a reply after
    tools against their results (``parley.answers``); each shows only supported sentences.
    ``separate``: start this turn's text on a new paragraph if earlier turns wrote text.
    """
    route = state.route
    assert route is not None
    instructions = state.assistant.instructions if state.assistant is not None else ""
    # A small model's claims about what the user said are checked against what the user said
    # (not what they asked: "what can't I eat?" does not say "you can't eat anything").
    users = (m.content for m in request.messages if m.role == "user")
    said = None if route.primary.chooses_tools else statements(users)
    guard = Guard(
        scaffolding(instructions, (m.content for m in request.messages if m.role == "system")), said=said
    )
    before = len(state.text)
    checker: Gate | SentenceGate | None = gate or state.gate
    produced = ""
    fragments: list[ToolCallDelta] = []

    async def show(text: str) -> None:
        nonlocal separate
        if checker is not None and text:
            text = checker.feed(text)
        if text:
            await _say(agent, state, text, separate=separate)
            separate = False

    stream = cast(AsyncGenerator[Delta, None], route.stream(request))  # Route.stream is a generator
    async with aclosing(stream):
        async for delta in stream:
            if isinstance(delta, TextDelta):
                if not delta.text:
                    continue
                produced += delta.text
                await show(guard.feed(delta.text))
                if guard.stopped is not None:
                    break
            elif isinstance(delta, Usage | Fallback):
                _account(agent, state, delta)
            elif isinstance(delta, Finish):
                state.finish_reason = delta.reason
            elif isinstance(delta, ToolCallDelta):
                fragments.append(delta)
    await show(guard.flush())
    if guard.claims and not state.text[before:].strip():
        # All it wrote was what the user never said ("You told me you are in New York.").
        await show(NOT_TOLD)
    if (report := guard.report()) is not None:
        state.message_data["guard"] = report
        if guard.stopped is not None:
            state.finish_reason = "stop"
    if checker is not None:
        rest = checker.flush()
        if isinstance(checker, SentenceGate):
            if not checker.shown:  # the model wrote nothing its sources support
                rest = checker.fallback
                state.message_data["composed"] = "extractive"
            if checker.dropped:
                state.message_data["unsupported"] = checker.dropped
        if rest:
            await _say(agent, state, rest, separate=separate)
    return produced, fragments


def estimate_usage(state: RunState, request: ProviderRequest, produced: str) -> None:
    """Count tokens ourselves for a provider that reports no usage."""
    if state.usage_reported:
        return
    assert state.route is not None
    count = state.route.primary.count_tokens
    state.input_tokens += sum(count(m.content) for m in request.messages)
    state.output_tokens += count(produced)


async def seen_in_thread(agent: Agent, state: RunState, tools: Tools) -> Seen:
    assert state.assistant is not None
    options = state.assistant.options
    async with agent.db.session() as session:
        messages = await history(session, state.run.thread_id)
    return Seen.from_history(
        messages,
        window=int(options.get("ref_window", tools.ref_window)),
        max_age=options.get("ref_max_age", tools.ref_max_age),
    )


async def tool_loop(
    agent: Agent,
    state: RunState,
    request: ProviderRequest,
    toolbox: list[Tool],
    ctx: ToolContext,
    seen: Seen,
) -> None:
    """Native tool calling: stream a turn, run its calls, feed the results back, repeat.

    The first turn streams as it comes. A turn that follows tool results passes through a
    ``Gate``: only sentences whose prices, ids and numbers the results hold are shown, and
    when none is, the tools' own summaries are the reply.
    """
    assert state.assistant is not None
    assert agent.tools is not None
    by_name = {t.name: t for t in toolbox}
    max_steps = int(state.assistant.options.get("max_steps", agent.tools.max_steps))
    request = replace(request, tools=[t.spec() for t in toolbox])
    gate: Gate | None = None
    results: list[Outcome] = []
    step = 0
    while True:
        step += 1
        over = step > max_steps
        if over:
            request = replace(request, tool_choice="none")
        produced, fragments = await stream_turn(agent, state, request, separate=step > 1, gate=gate)
        estimate_usage(state, request, produced)
        if not fragments:
            break
        calls = assemble(fragments)
        _announce(agent, state, calls)
        if over:
            reason = f"the step limit of {max_steps} tool rounds is reached; answer with what you have"
            outcomes = [rejected(call, reason) for call in calls]
        else:
            outcomes = await execute(calls, by_name, ctx, seen, timeout=agent.tools.timeout)
        _record(agent, state, outcomes, step)
        results.extend(outcomes)
        gate = gate or Gate()
        gate.add_evidence(evidence(outcomes))
        turn = ChatMessage("assistant", produced, tool_calls=calls)
        request = replace(request, messages=[*request.messages, turn, *(o.message() for o in outcomes)])
        if over:
            break
    if gate is not None and not gate.released:
        await _say(agent, state, summaries(results))


async def server_chosen_tools(
    agent: Agent,
    state: RunState,
    toolbox: list[Tool],
    ctx: ToolContext,
    seen: Seen,
) -> None:
    """Small-model mode: the server picks the tools and their arguments; the reply is the tools'
    own summaries, and the model writes none of it. Small talk ("hello", "thanks, that's all")
    gets the assistant's own reply; a message no tool claims is looked up by the tool that
    finds things (``looked_up``), or answered with the assistant's greeting.

    References ("it", "the first one", "both") resolve against what the thread has shown
    (``parley.answers.references``); when they fit several products the reply is a question
    and that call never runs. Plain arguments come from the tool's own reading of the words
    (``Tool.derive``) or, failing that, from the model under a JSON schema.
    """
    assert state.assistant is not None
    assert agent.tools is not None
    text = state.run.input
    if (kind := small_talk(text)) is not None:
        await _say(agent, state, small_talk_reply(kind, state.assistant))
        return
    by_name = {t.name: t for t in toolbox}
    max_steps = int(state.assistant.options.get("max_steps", agent.tools.max_steps))
    choices = (await route(agent, text, toolbox))[:max_steps]
    shown = await shown_in_thread(agent, state, agent.tools)
    if not choices and points_at(text):
        choices = pointed(text, toolbox, shown)
        kind = next((t.describes for t in toolbox if t.describes), None)
        if not choices and kind:  # "which one is cheaper?" with nothing shown yet
            await _say(agent, state, nothing_shown(kind))
            return
    if not choices:
        # No tool's words: a small model left to itself in a shop invents products and brands
        # ("the Nike Runners' Fitbit"), so the message is looked up as what the assistant finds
        # ("something for my dad who likes cooking"), or answered with what it can do.
        lookup = looked_up(text, toolbox)
        if lookup is None:
            await _say(agent, state, small_talk_reply("greeting", state.assistant))
            return
        choices = [lookup]
    said: list[str] = []
    for step, choice in enumerate(choices, start=1):
        finding = Finding(agent, state, by_name, ctx, seen, shown, step)
        filled = await _arguments(agent, state, choice, seen, shown, finding)
        if isinstance(filled, str):
            said.append(filled)
            break
        calls = [ToolCall(new_id("call"), choice.tool.name, arguments) for arguments in filled]
        for call in calls:  # one at a time: "add both" reports the cart as each addition left it
            _announce(agent, state, [call])
            outcomes = await execute([call], by_name, ctx, seen, timeout=agent.tools.timeout)
            _record(agent, state, outcomes, step)
            shown.add_records(o.record(step) for o in outcomes)
            said.extend(o.summary for o in outcomes if o.summary)
    await _say(agent, state, "\n\n".join(dict.fromkeys(said)))


def looked_up(text: str, toolbox: Sequence[Tool]) -> Choice | None:
    """The search of a tool that finds things (``Tool.finds``), for a message no tool's words
    claim, when its words give the search something to look for; else ``None``."""
    for tool in toolbox:
        if tool.finds and tool.derive is not None and any(tool.derive(text).values()):
            return Choice(tool, 0.0, text)
    return None


def pointed(text: str, toolbox: Sequence[Tool], shown: Shown) -> list[Choice]:
    """A message no tool's words claim that picks among what was shown ("which one is
    cheaper?", "and the second?"): the tool that shows such a thing in detail, when the
    conversation has shown some; the model would answer from nothing."""
    for tool in toolbox:
        if tool.describes and (shown.last_list(tool.describes) or shown.focus(tool.describes)):
            return [Choice(tool, 1.0, text)]
    return []


@dataclass(frozen=True)
class Finding:
    """What a turn needs to search for a thing the user named but the conversation never showed:
    the search is a tool call of this turn (recorded and shown like any), so provenance holds."""

    agent: Agent
    state: RunState
    toolbox: dict[str, Tool]
    ctx: ToolContext
    seen: Seen
    shown: Shown
    step: int

    async def find(self, kind: str, text: str, words: set[str]) -> str | Resolution | None:
        """The one ``kind`` whose name has every word of ``words`` (a ``Resolution``), or the
        reply when none or several do (a question back, or the search's own summary); ``None``
        when no tool searches for ``kind``."""
        finder = next((t for t in self.toolbox.values() if t.finds == kind), None)
        if finder is None:
            return None
        query = " ".join(w for w in re.findall(r"[\w'-]+", text) if set(stems(w)) & words)
        arguments = finder.derive(query) if finder.derive is not None else {"query": query}
        call = ToolCall(new_id("call"), finder.name, json.dumps(arguments, ensure_ascii=False))
        _announce(self.agent, self.state, [call])
        assert self.agent.tools is not None
        outcomes = await execute([call], self.toolbox, self.ctx, self.seen, timeout=self.agent.tools.timeout)
        _record(self.agent, self.state, outcomes, self.step)
        self.shown.add_records(o.record(self.step) for o in outcomes)
        found = self.shown.last_list(kind) if outcomes[0].status == "ok" and outcomes[0].refs else ()
        matches = named_by(found, words)
        if len(matches) == 1:
            return Resolution((matches[0].id,), how="named")
        if not found:
            return outcomes[0].summary
        resolution = Resolution(choices=matches or found, how="named")
        self.state.message_data["choices"] = choices_data(resolution, kind)
        return question(resolution, kind)


async def route(agent: Agent, text: str, toolbox: list[Tool]) -> list[Choice]:
    """The tools for ``text`` (``parley.tools.choice.plan``), chosen in a worker thread: the
    router may embed the message. The server's ``HybridRouter`` gets the knowledge embedder at
    the first turn, when it is the model its bar was measured with (else it routes by keywords)."""
    assert agent.tools is not None
    router = agent.tools.router
    if isinstance(router, HybridRouter) and not router.attached:
        embedder = await agent.knowledge.embedder() if agent.knowledge is not None else None
        router.attach(embedder.embed if embedder is not None and embedder.name == EMBEDDING_MODEL else None)
    return await asyncio.to_thread(plan, router, text, toolbox)


async def _arguments(
    agent: Agent, state: RunState, choice: Choice, seen: Seen, shown: Shown, finding: Finding | None = None
) -> list[str] | str:
    """The JSON arguments of ``choice``'s calls (one per product meant), or a question back.

    A product named but never shown is searched for (``finding``) and meant when exactly one
    result has its every word."""
    tool = choice.tool
    schema = tool.schema()
    if not schema["properties"]:
        return ["{}"]
    resolved: tuple[str, list[str]] | None = None
    skip: list[str] = []
    ignore = stems(tool_document(tool))
    for argument, kind in tool.references.items():
        there: list[Item] | None = None
        if tool.within is not None and finding is not None:
            # "remove the shoes": the shoes in the cart, whatever else was shown.
            there = [Item(*thing) for thing in await tool.within.things(finding.ctx)]
            if not there:
                return not_there(there, tool.within.where)
            shown = shown.knowing(kind, there)
        resolution = resolve(choice.text, shown, kind, ignore=ignore)
        if there is not None and tool.within is not None:
            resolution = resolution.within(there)
            if resolution.how == "outside":
                return not_there(there, tool.within.where)
        required = argument in schema.get("required", [])
        # An optional reference ("recommend something like it", or "recommend books") counts
        # only when the words point at something shown.
        pointed = required or resolution.how == "named" or mentions(choice.text)
        if resolution.ids and pointed:
            resolved = (argument, list(resolution.ids))
            break
        words = naming(choice.text, ignore=ignore)
        unseen = not resolution.anything_shown or resolution.how == "unmatched"
        if pointed and finding is not None and words and unseen and not mentions(choice.text):
            found = await finding.find(kind, choice.text, words)
            if isinstance(found, Resolution):
                resolved = (argument, list(found.ids))
                break
            if found is not None:
                return found
        if pointed:
            state.message_data["choices"] = choices_data(resolution, kind)
            return question(resolution, kind)
    skip.extend(tool.references)
    if tool.derive is not None:
        values = tool.derive(choice.text)
    elif without(essential(schema), skip)["properties"]:
        fill = fill_request(tool, choice.text, seen, thread_id=state.run.thread_id, skip=skip)
        text = ground_text(parse_arguments(await _complete(agent, state, fill)), tool, choice.text)
        values = _object(text)
    else:
        values = {}
    values = {k: v for k, v in values.items() if k not in tool.references}
    if resolved is None:
        return [json.dumps(values, ensure_ascii=False)]
    argument, ids = resolved
    return [json.dumps({**values, argument: ref_id}, ensure_ascii=False) for ref_id in ids]


def _object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


async def shown_in_thread(agent: Agent, state: RunState, tools: Tools) -> Shown:
    """What the thread's recent turns showed, in order (for resolving "it", "the first one")."""
    assert state.assistant is not None
    async with agent.db.session() as session:
        messages = await history(session, state.run.thread_id)
    return Shown.from_history(
        messages, window=int(state.assistant.options.get("ref_window", tools.ref_window))
    )


async def _say(agent: Agent, state: RunState, text: str, *, separate: bool = True) -> None:
    """Text the server wrote (summaries, a question, checked sentences) as ``message.delta``."""
    if not text:
        return
    if state.first_token is None:
        state.first_token = time.perf_counter()
        agent.metrics.ttft_seconds.labels(state.run.assistant).observe(state.first_token - state.started)
    if separate and state.text and not state.text[-1].isspace():
        text = "\n\n" + text.lstrip()
    state.text += text
    agent.log.append_text(state.run.id, text)
    await agent.log.pace(state.run.id)


async def _complete(agent: Agent, state: RunState, request: ProviderRequest) -> str:
    """A model reply collected silently (tool arguments are not part of the answer)."""
    assert state.route is not None
    text = ""
    async for delta in state.route.stream(request):
        if isinstance(delta, TextDelta):
            text += delta.text
        elif isinstance(delta, Usage | Fallback):
            _account(agent, state, delta)
    estimate_usage(state, request, text)
    return text


def _announce(agent: Agent, state: RunState, calls: list[ToolCall]) -> None:
    for call in calls:
        agent.log.append(
            state.run.id,
            ev.TOOL_CALL,
            {"id": call.id, "name": call.name, "arguments": shown_arguments(call.arguments)},
        )


def _record(agent: Agent, state: RunState, outcomes: list[Outcome], step: int) -> None:
    for outcome in outcomes:
        type_, data = outcome.event()
        agent.log.append(state.run.id, type_, data)
        state.tool_calls.append(outcome.record(step))
        agent.metrics.tool_calls.labels(outcome.call.name, outcome.status).inc()


def _account(agent: Agent, state: RunState, delta: Usage | Fallback) -> None:
    """A model turn's usage, or a switch to the route's next provider (also in silent turns)."""
    if isinstance(delta, Usage):
        state.input_tokens += delta.input_tokens
        state.output_tokens += delta.output_tokens
        state.usage_reported = True
        return
    state.fallbacks += 1
    agent.metrics.provider_fallbacks.labels(delta.from_, delta.to).inc()
    agent.log.append(
        state.run.id, ev.PROVIDER_FALLBACK, {"from": delta.from_, "to": delta.to, "reason": delta.reason}
    )
