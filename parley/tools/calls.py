"""Executing the tool calls of one model turn: assemble, validate, check provenance, run.

Every call ends in exactly one outcome: ``ok`` (the tool ran), ``error`` (it ran and
raised, or timed out) or ``rejected`` (it never ran: unknown tool, invalid arguments,
an unseen reference, the step limit). Calls of one turn run concurrently; they are all
checked against what was seen *before* the turn, since the model wrote them together.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from parley.providers.base import ChatMessage, ToolCall, ToolCallDelta
from parley.store.schema import new_id
from parley.tools.base import Tool, ToolContext, ToolError
from parley.tools.provenance import Seen

log = structlog.get_logger(__name__)

Status = Literal["ok", "error", "rejected"]


def assemble(fragments: Sequence[ToolCallDelta]) -> list[ToolCall]:
    """Join streamed fragments into calls (fragments with the same index form one call)."""
    calls: dict[int, ToolCall] = {}
    for fragment in fragments:
        call = calls.get(fragment.index)
        if call is None:
            call = calls[fragment.index] = ToolCall(fragment.id or "", fragment.name or "", "")
        if fragment.id and not call.id:
            call.id = fragment.id
        if fragment.name and not call.name:
            call.name = fragment.name
        call.arguments += fragment.arguments
    ordered = [calls[i] for i in sorted(calls)]
    for call in ordered:
        call.id = call.id or new_id("call")
    return ordered


def shown_arguments(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return arguments


@dataclass(slots=True)
class Outcome:
    call: ToolCall
    status: Status
    output: Any
    ui: dict[str, Any] | None = None
    refs: dict[str, dict[str, str]] = field(default_factory=dict)
    suggestions: list[dict[str, str]] = field(default_factory=list)
    #: For a person: what the tool found or did, or why it could not (plain sentences).
    summary: str = ""
    focus: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return str(self.output.get("error", "")) if isinstance(self.output, dict) else ""

    def event(self) -> tuple[str, dict[str, Any]]:
        from parley import events as ev

        if self.status == "rejected":
            return ev.TOOL_REJECTED, {
                "id": self.call.id,
                "name": self.call.name,
                "reason": self.reason,
                "suggestions": self.suggestions,
            }
        return ev.TOOL_RESULT, {
            "id": self.call.id,
            "name": self.call.name,
            "output": self.output,
            "ui": self.ui,
            "is_error": self.status == "error",
        }

    def record(self, step: int) -> dict[str, Any]:
        """What the assistant message keeps: for the next turn's context, provenance and the UI."""
        return {
            "id": self.call.id,
            "name": self.call.name,
            "arguments": self.call.arguments,
            "step": step,
            "status": self.status,
            "output": self.output,
            "ui": self.ui,
            "refs": self.refs,
            "summary": self.summary,
            "focus": self.focus,
        }

    def message(self) -> ChatMessage:
        return ChatMessage(
            "tool",
            json.dumps(self.output, ensure_ascii=False, default=str),
            tool_call_id=self.call.id,
            name=self.call.name,
        )


def rejected(
    call: ToolCall,
    reason: str,
    suggestions: list[dict[str, str]] | None = None,
    *,
    summary: str = "",
) -> Outcome:
    output: dict[str, Any] = {"error": reason}
    if suggestions:
        output["suggestions"] = suggestions
    summary = summary or f"I couldn't {call.name.replace('_', ' ')}: {_clause(reason)}"
    return Outcome(call, "rejected", output, suggestions=suggestions or [], summary=summary)


def failed(tool: Tool, message: str) -> str:
    """The summary of a call that could not be done: "I couldn't add that to your cart: ..."."""
    return f"I couldn't {tool.doing}: {_clause(message)}"


def _clause(message: str) -> str:
    message = " ".join(message.split()).rstrip(".")
    return f"{message}." if message else "something went wrong."


async def execute(
    calls: Sequence[ToolCall],
    toolbox: Mapping[str, Tool],
    ctx: ToolContext,
    seen: Seen,
    *,
    timeout: float,
) -> list[Outcome]:
    """Run one turn's calls; ``seen`` grows by what the successful ones showed."""
    outcomes: list[Outcome | None] = [None] * len(calls)
    runnable: list[tuple[int, Tool, Any]] = []
    for index, call in enumerate(calls):
        tool = toolbox.get(call.name)
        if tool is None:
            known = ", ".join(toolbox) or "none"
            outcomes[index] = rejected(
                call,
                f"there is no tool named {call.name!r}; available: {known}",
                summary="I couldn't do that: I have no tool for it.",
            )
            continue
        try:
            args = tool.parse(call.arguments)
        except ValueError as exc:
            outcomes[index] = rejected(
                call, str(exc), summary=failed(tool, "the request was incomplete or not valid")
            )
            continue
        rejection = seen.check(tool.references, {name: getattr(args, name) for name in tool.references})
        if rejection is not None:
            log.info("tool_rejected", tool=call.name, reason=rejection.reason)
            kinds = " or ".join(sorted(set(tool.references.values())))
            outcomes[index] = rejected(
                call,
                rejection.reason,
                rejection.suggestions,
                summary=failed(tool, f"that {kinds} was not shown in this conversation"),
            )
            continue
        runnable.append((index, tool, args))

    async def run(tool: Tool, call: ToolCall, args: Any) -> Outcome:
        try:
            result = await asyncio.wait_for(tool.run(ctx, args), timeout)
        except ToolError as exc:
            output: dict[str, Any] = {"error": exc.message, "code": exc.code}
            if exc.details:
                output["details"] = exc.details
            return Outcome(call, "error", output, summary=failed(tool, exc.message))
        except TimeoutError:
            return Outcome(
                call,
                "error",
                {"error": f"{tool.name} did not finish within {timeout:g} s"},
                summary=failed(tool, f"it did not finish within {timeout:g} s"),
            )
        except Exception as exc:
            log.exception("tool_crashed", tool=tool.name, error=repr(exc))
            return Outcome(
                call,
                "error",
                {"error": f"{tool.name} failed unexpectedly"},
                summary=failed(tool, "something went wrong on my side"),
            )
        return Outcome(
            call, "ok", result.output, result.ui, result.refs, summary=result.summary, focus=result.focus
        )

    results = await asyncio.gather(*(run(tool, calls[i], args) for i, tool, args in runnable))
    for (index, _, _), outcome in zip(runnable, results, strict=True):
        outcomes[index] = outcome
        if outcome.status == "ok":
            seen.add(outcome.refs)
    return [o for o in outcomes if o is not None]
