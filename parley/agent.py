"""The agent loop of a run: build the context, stream the model, append events.

``run_agent`` is what the executor runs inside a run's producer task. Each step here
appends events through ``executor.log``; the executor owns the terminal event.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from parley import events as ev
from parley.providers.base import Fallback, Finish, ProviderRequest, TextDelta, ToolCallDelta, Usage

if TYPE_CHECKING:
    from parley.executor import Executor, RunState


async def run_agent(executor: Executor, state: RunState) -> None:
    request = await prepare(executor, state)
    await stream_turn(executor, state, request)
    if not state.usage_reported:
        assert state.route is not None
        state.input_tokens = sum(state.route.primary.count_tokens(m.content) for m in request.messages)
        state.output_tokens = state.route.primary.count_tokens(state.text)
    await executor.log.flush()


async def prepare(executor: Executor, state: RunState) -> ProviderRequest:
    """The request for the first model turn: instructions, memory, summary, history (``parley.context``)."""
    assert state.assistant is not None
    assert state.route is not None
    context = await executor.context.build(
        state.run, state.assistant, state.route.primary, sources=state.sources
    )
    state.message_data["context"] = context.info()
    return context.request


async def stream_turn(executor: Executor, state: RunState, request: ProviderRequest) -> list[ToolCallDelta]:
    """Stream one model turn: text becomes ``message.delta`` events; tool-call fragments are returned."""
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
            state.text += delta.text
            executor.log.append(run.id, ev.MESSAGE_DELTA, {"text": delta.text})
        elif isinstance(delta, Usage):
            state.input_tokens += delta.input_tokens
            state.output_tokens += delta.output_tokens
            state.usage_reported = True
        elif isinstance(delta, Fallback):
            state.fallbacks += 1
            executor.metrics.provider_fallbacks.labels(delta.from_, delta.to).inc()
            executor.log.append(
                run.id, ev.PROVIDER_FALLBACK, {"from": delta.from_, "to": delta.to, "reason": delta.reason}
            )
        elif isinstance(delta, Finish):
            state.finish_reason = delta.reason
        elif isinstance(delta, ToolCallDelta):
            fragments.append(delta)
    return fragments
