"""The agent loop of a run: build the context, stream the model, run tools, append events.

``run_agent`` is what the executor runs inside a run's producer task. Each step here
appends events through ``executor.log``; the executor owns the terminal event.

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

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from parley import events as ev
from parley import passthrough
from parley.answers.references import Shown, choices_data, mentions, question, resolve
from parley.answers.replies import Gate, evidence, summaries
from parley.knowledge.grounding import cite, decline, prompt_source, retrieve
from parley.providers.base import (
    ChatMessage,
    Fallback,
    Finish,
    ProviderRequest,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from parley.store.schema import new_id
from parley.threads import history
from parley.tools.base import Tool, ToolContext, Tools
from parley.tools.calls import Outcome, assemble, execute, rejected, shown_arguments
from parley.tools.choice import (
    Choice,
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
    from parley.executor import Executor, RunState


async def run_agent(executor: Executor, state: RunState) -> None:
    prepared = await prepare(executor, state)
    if prepared is None:  # answered without the model (nothing in the knowledge bases fits)
        await executor.log.flush()
        return
    request = passthrough.apply(prepared, state.run.options)
    assert state.assistant is not None
    assert state.route is not None
    tools = executor.tools
    client_tools = passthrough.client_tools(state.run.options)
    if tools is None or not state.assistant.tools or client_tools:
        fragments = await stream_turn(executor, state, request)
        if client_tools:
            passthrough.report(executor, state, fragments)
        cite(executor, state)
        estimate_usage(state, request, state.text)
    else:
        toolbox = tools.select(state.assistant.tools)
        seen = await seen_in_thread(executor, state, tools)
        ctx = tools.context(
            executor.db, thread_id=state.run.thread_id, user_id=state.run.user_id, run_id=state.run.id
        )
        if state.route.primary.chooses_tools:
            await tool_loop(executor, state, request, toolbox, ctx, seen)
        else:
            await server_chosen_tools(executor, state, request, toolbox, ctx, seen)
        if state.tool_calls:
            state.message_data["tool_calls"] = state.tool_calls
        cite(executor, state)
    await executor.log.flush()


async def prepare(executor: Executor, state: RunState) -> ProviderRequest | None:
    """The request for the first model turn: instructions, memory, retrieved sources, summary and
    history (``parley.context``).

    ``None`` when the run is already answered: the assistant has knowledge bases and nothing
    in them is about the question, so it says so instead of calling the model.
    """
    assert state.assistant is not None
    assert state.route is not None
    sources: list[dict[str, str]] = []
    if state.assistant.knowledge_bases:
        hits = await retrieve(executor, state, state.run.input)
        if not hits:
            decline(executor, state)
            return None
        sources = [prompt_source(hit) for hit in hits]
    context = await executor.context.build(state.run, state.assistant, state.route.primary, sources=sources)
    state.message_data["context"] = context.info()
    del state.sources[context.sources :]  # the answer cites only the sources that fit the prompt
    return replace(context.request, **state.assistant.sampling())


async def stream_turn(
    executor: Executor, state: RunState, request: ProviderRequest, *, separate: bool = False
) -> list[ToolCallDelta]:
    """Stream one model turn: text becomes ``message.delta`` events; tool-call fragments are returned.

    ``separate``: start this turn's text on a new paragraph if earlier turns wrote text.
    """
    run, route = state.run, state.route
    assert route is not None
    fragments: list[ToolCallDelta] = []
    async for delta in route.stream(request):
        if isinstance(delta, TextDelta):
            if not delta.text:
                continue
            if state.first_token is None:
                state.first_token = time.perf_counter()
                executor.metrics.ttft_seconds.labels(run.assistant).observe(state.first_token - state.started)
            text = delta.text
            if separate and state.text and not state.text[-1].isspace():
                text = "\n\n" + text.lstrip()
            separate = False
            state.text += text
            executor.log.append_text(run.id, text)
            await executor.log.pace(run.id)
        elif isinstance(delta, Usage):
            state.input_tokens += delta.input_tokens
            state.output_tokens += delta.output_tokens
            state.usage_reported = True
        elif isinstance(delta, Fallback):
            _fallback(executor, state, delta)
        elif isinstance(delta, Finish):
            state.finish_reason = delta.reason
        elif isinstance(delta, ToolCallDelta):
            fragments.append(delta)
    return fragments


def estimate_usage(state: RunState, request: ProviderRequest, produced: str) -> None:
    """Count tokens ourselves for a provider that reports no usage."""
    if state.usage_reported:
        return
    assert state.route is not None
    count = state.route.primary.count_tokens
    state.input_tokens += sum(count(m.content) for m in request.messages)
    state.output_tokens += count(produced)


async def seen_in_thread(executor: Executor, state: RunState, tools: Tools) -> Seen:
    assert state.assistant is not None
    options = state.assistant.options
    async with executor.db.session() as session:
        messages = await history(session, state.run.thread_id)
    return Seen.from_history(
        messages,
        window=int(options.get("ref_window", tools.ref_window)),
        max_age=options.get("ref_max_age", tools.ref_max_age),
    )


async def tool_loop(
    executor: Executor,
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
    assert executor.tools is not None
    by_name = {t.name: t for t in toolbox}
    max_steps = int(state.assistant.options.get("max_steps", executor.tools.max_steps))
    request = replace(request, tools=[t.spec() for t in toolbox])
    gate: Gate | None = None
    results: list[Outcome] = []
    step = 0
    while True:
        step += 1
        over = step > max_steps
        if over:
            request = replace(request, tool_choice="none")
        before = len(state.text)
        if gate is None:
            fragments = await stream_turn(executor, state, request, separate=step > 1)
            produced = state.text[before:]
        else:
            produced, fragments = await _checked_turn(executor, state, request, gate)
        estimate_usage(state, request, produced)
        if not fragments:
            break
        calls = assemble(fragments)
        _announce(executor, state, calls)
        if over:
            reason = f"the step limit of {max_steps} tool rounds is reached; answer with what you have"
            outcomes = [rejected(call, reason) for call in calls]
        else:
            outcomes = await execute(calls, by_name, ctx, seen, timeout=executor.tools.timeout)
        _record(executor, state, outcomes, step)
        results.extend(outcomes)
        gate = gate or Gate()
        gate.add_evidence(evidence(outcomes))
        turn = ChatMessage("assistant", produced, tool_calls=calls)
        request = replace(request, messages=[*request.messages, turn, *(o.message() for o in outcomes)])
        if over:
            break
    if gate is not None and not gate.released:
        await _say(executor, state, summaries(results))


async def _checked_turn(
    executor: Executor, state: RunState, request: ProviderRequest, gate: Gate
) -> tuple[str, list[ToolCallDelta]]:
    """A model turn after tool results: its text shown only as far as ``gate`` lets it through."""
    assert state.route is not None
    produced = ""
    fragments: list[ToolCallDelta] = []
    gate.begin_turn()
    first = True
    async for delta in state.route.stream(request):
        if isinstance(delta, TextDelta):
            produced += delta.text
            shown = gate.feed(delta.text)
            if shown:
                await _say(executor, state, shown, separate=first)
                first = False
        elif isinstance(delta, Usage):
            state.input_tokens += delta.input_tokens
            state.output_tokens += delta.output_tokens
            state.usage_reported = True
        elif isinstance(delta, Fallback):
            _fallback(executor, state, delta)
        elif isinstance(delta, Finish):
            state.finish_reason = delta.reason
        elif isinstance(delta, ToolCallDelta):
            fragments.append(delta)
    shown = gate.close()
    if shown:
        await _say(executor, state, shown, separate=first)
    return produced, fragments


async def server_chosen_tools(
    executor: Executor,
    state: RunState,
    request: ProviderRequest,
    toolbox: list[Tool],
    ctx: ToolContext,
    seen: Seen,
) -> None:
    """Small-model mode: the server picks the tools and their arguments; the reply is the tools'
    own summaries, with no model turn after them.

    References ("it", "the first one", "both") resolve against what the thread has shown
    (``parley.answers.references``); when they fit several products the reply is a question
    and that call never runs. Plain arguments come from the tool's own reading of the words
    (``Tool.derive``) or, failing that, from the model under a JSON schema.
    """
    assert state.assistant is not None
    assert executor.tools is not None
    by_name = {t.name: t for t in toolbox}
    max_steps = int(state.assistant.options.get("max_steps", executor.tools.max_steps))
    choices = plan(executor.tools.router, state.run.input, toolbox)[:max_steps]
    if not choices:
        # No tool for this message: the model answers, without tool messages it cannot read.
        messages = [m for m in request.messages if m.role != "tool" and not m.tool_calls]
        request = replace(request, messages=messages)
        await stream_turn(executor, state, request)
        estimate_usage(state, request, state.text)
        return
    shown = await shown_in_thread(executor, state, executor.tools)
    said: list[str] = []
    for step, choice in enumerate(choices, start=1):
        filled = await _arguments(executor, state, choice, seen, shown)
        if isinstance(filled, str):
            said.append(filled)
            break
        calls = [ToolCall(new_id("call"), choice.tool.name, arguments) for arguments in filled]
        for call in calls:  # one at a time: "add both" reports the cart as each addition left it
            _announce(executor, state, [call])
            outcomes = await execute([call], by_name, ctx, seen, timeout=executor.tools.timeout)
            _record(executor, state, outcomes, step)
            shown.add_records(o.record(step) for o in outcomes)
            said.extend(o.summary for o in outcomes if o.summary)
    await _say(executor, state, "\n\n".join(dict.fromkeys(said)))


async def _arguments(
    executor: Executor, state: RunState, choice: Choice, seen: Seen, shown: Shown
) -> list[str] | str:
    """The JSON arguments of ``choice``'s calls (one per product meant), or a question back."""
    tool = choice.tool
    schema = tool.schema()
    if not schema["properties"]:
        return ["{}"]
    resolved: tuple[str, list[str]] | None = None
    skip: list[str] = []
    for argument, kind in tool.references.items():
        resolution = resolve(choice.text, shown, kind, ignore=stems(tool_document(tool)))
        required = argument in schema.get("required", [])
        # An optional reference ("recommend something like it", or "recommend books") counts
        # only when the words point at something shown.
        pointed = required or resolution.how == "named" or mentions(choice.text)
        if resolution.ids and pointed:
            resolved = (argument, list(resolution.ids))
            break
        if pointed:
            state.message_data["choices"] = choices_data(resolution, kind)
            return question(resolution, kind)
    skip.extend(tool.references)
    if tool.derive is not None:
        values = tool.derive(choice.text)
    elif without(essential(schema), skip)["properties"]:
        fill = fill_request(tool, choice.text, seen, thread_id=state.run.thread_id, skip=skip)
        text = ground_text(parse_arguments(await _complete(executor, state, fill)), tool, choice.text)
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


async def shown_in_thread(executor: Executor, state: RunState, tools: Tools) -> Shown:
    """What the thread's recent turns showed, in order (for resolving "it", "the first one")."""
    assert state.assistant is not None
    async with executor.db.session() as session:
        messages = await history(session, state.run.thread_id)
    return Shown.from_history(
        messages, window=int(state.assistant.options.get("ref_window", tools.ref_window))
    )


async def _say(executor: Executor, state: RunState, text: str, *, separate: bool = True) -> None:
    """Text the server wrote (summaries, a question, checked sentences) as ``message.delta``."""
    if not text:
        return
    if state.first_token is None:
        state.first_token = time.perf_counter()
        executor.metrics.ttft_seconds.labels(state.run.assistant).observe(state.first_token - state.started)
    if separate and state.text and not state.text[-1].isspace():
        text = "\n\n" + text.lstrip()
    state.text += text
    executor.log.append_text(state.run.id, text)
    await executor.log.pace(state.run.id)


async def _complete(executor: Executor, state: RunState, request: ProviderRequest) -> str:
    """A model reply collected silently (tool arguments are not part of the answer)."""
    assert state.route is not None
    text = ""
    async for delta in state.route.stream(request):
        if isinstance(delta, TextDelta):
            text += delta.text
        elif isinstance(delta, Usage):
            state.input_tokens += delta.input_tokens
            state.output_tokens += delta.output_tokens
            state.usage_reported = True
        elif isinstance(delta, Fallback):
            _fallback(executor, state, delta)
    estimate_usage(state, request, text)
    return text


def _announce(executor: Executor, state: RunState, calls: list[ToolCall]) -> None:
    for call in calls:
        executor.log.append(
            state.run.id,
            ev.TOOL_CALL,
            {"id": call.id, "name": call.name, "arguments": shown_arguments(call.arguments)},
        )


def _record(executor: Executor, state: RunState, outcomes: list[Outcome], step: int) -> None:
    for outcome in outcomes:
        type_, data = outcome.event()
        executor.log.append(state.run.id, type_, data)
        state.tool_calls.append(outcome.record(step))
        executor.metrics.tool_calls.labels(outcome.call.name, outcome.status).inc()


def _fallback(executor: Executor, state: RunState, delta: Fallback) -> None:
    state.fallbacks += 1
    executor.metrics.provider_fallbacks.labels(delta.from_, delta.to).inc()
    executor.log.append(
        state.run.id, ev.PROVIDER_FALLBACK, {"from": delta.from_, "to": delta.to, "reason": delta.reason}
    )
