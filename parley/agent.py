"""The agent loop of a run: build the context, stream the model, run tools, append events.

``run_agent`` is what the executor runs inside a run's producer task. Each step here
appends events through ``executor.log``; the executor owns the terminal event.

With tools, a model that chooses tools itself gets them natively and the loop goes on
while it calls them (up to the step limit); for a model that cannot (``chooses_tools =
False``), the server picks the tools from the user's message and the model only fills
their arguments under a JSON schema (see ``parley.tools.choice``). Either way every call
goes through the same validation and provenance checks (``parley.tools.calls``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from parley import events as ev
from parley import passthrough
from parley.answers.guards import Guard, scaffolding
from parley.knowledge.grounding import cite, decline, prompt_source, retrieve
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
from parley.store.schema import new_id
from parley.threads import history
from parley.tools.base import Tool, ToolContext, Tools
from parley.tools.calls import Outcome, assemble, execute, rejected, shown_arguments
from parley.tools.choice import fill_request, ground_text, parse_arguments, plan, render_results
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

    The text goes through a ``Guard`` (``parley.answers.guards``): no echo of the prompt's
    scaffolding, no degenerate repetition. When it stops the reply, leaving the stream closes
    the provider's, and ``message_data["guard"]`` says why.
    ``separate``: start this turn's text on a new paragraph if earlier turns wrote text.
    """
    run, route = state.run, state.route
    assert route is not None
    instructions = state.assistant.instructions if state.assistant is not None else ""
    guard = Guard(scaffolding(instructions, (m.content for m in request.messages if m.role == "system")))
    fragments: list[ToolCallDelta] = []

    def show(text: str) -> None:
        nonlocal separate
        if not text:
            return
        if separate and state.text and not state.text[-1].isspace():
            text = "\n\n" + text.lstrip()
        separate = False
        state.text += text
        executor.log.append_text(run.id, text)

    stream = cast(AsyncGenerator[Delta, None], route.stream(request))  # Route.stream is a generator
    async with aclosing(stream):
        async for delta in stream:
            if isinstance(delta, TextDelta):
                if not delta.text:
                    continue
                if state.first_token is None:
                    state.first_token = time.perf_counter()
                    executor.metrics.ttft_seconds.labels(run.assistant).observe(
                        state.first_token - state.started
                    )
                show(guard.feed(delta.text))
                if guard.stopped is not None:
                    break
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
    show(guard.flush())
    if (report := guard.report()) is not None:
        state.message_data["guard"] = report
        if guard.stopped is not None:
            state.finish_reason = "stop"
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
    """Native tool calling: stream a turn, run its calls, feed the results back, repeat."""
    assert state.assistant is not None
    assert executor.tools is not None
    by_name = {t.name: t for t in toolbox}
    max_steps = int(state.assistant.options.get("max_steps", executor.tools.max_steps))
    request = replace(request, tools=[t.spec() for t in toolbox])
    step = 0
    while True:
        step += 1
        over = step > max_steps
        if over:
            request = replace(request, tool_choice="none")
        before = len(state.text)
        fragments = await stream_turn(executor, state, request, separate=step > 1)
        estimate_usage(state, request, state.text[before:])
        if not fragments:
            return
        calls = assemble(fragments)
        _announce(executor, state, calls)
        if over:
            reason = f"the step limit of {max_steps} tool rounds is reached; answer with what you have"
            outcomes = [rejected(call, reason) for call in calls]
        else:
            outcomes = await execute(calls, by_name, ctx, seen, timeout=executor.tools.timeout)
        _record(executor, state, outcomes, step)
        turn = ChatMessage("assistant", state.text[before:], tool_calls=calls)
        request = replace(request, messages=[*request.messages, turn, *(o.message() for o in outcomes)])
        if over:
            return


async def server_chosen_tools(
    executor: Executor,
    state: RunState,
    request: ProviderRequest,
    toolbox: list[Tool],
    ctx: ToolContext,
    seen: Seen,
) -> None:
    """Small-model mode: the server picks the tools, the model fills their arguments, then answers."""
    assert state.assistant is not None
    assert executor.tools is not None
    by_name = {t.name: t for t in toolbox}
    max_steps = int(state.assistant.options.get("max_steps", executor.tools.max_steps))
    results: list[tuple[str, object]] = []
    for step, choice in enumerate(plan(executor.tools.router, state.run.input, toolbox)[:max_steps], start=1):
        if choice.tool.schema()["properties"]:
            fill = fill_request(choice.tool, choice.text, seen, thread_id=state.run.thread_id)
            arguments = ground_text(
                parse_arguments(await _complete(executor, state, fill)), choice.tool, choice.text
            )
        else:
            arguments = "{}"
        call = ToolCall(new_id("call"), choice.tool.name, arguments)
        _announce(executor, state, [call])
        outcomes = await execute([call], by_name, ctx, seen, timeout=executor.tools.timeout)
        _record(executor, state, outcomes, step)
        results.extend((o.call.name, o.output) for o in outcomes)
    # A small model reads tool results as text in the user's turn, not as tool messages.
    messages = [m for m in request.messages if m.role != "tool" and not m.tool_calls]
    if results:
        last = messages[-1]
        messages[-1] = ChatMessage(
            last.role, f"{last.content}\n\nResults of the tools the server ran:\n{render_results(results)}"
        )
    request = replace(request, messages=messages)
    await stream_turn(executor, state, request)
    estimate_usage(state, request, state.text)


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
