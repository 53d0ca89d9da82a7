"""The context builder: what the model sees for a run, within a token budget.

The prompt is, in order of priority when it does not all fit:

1. the assistant's instructions and the current turn (the user's latest message and
   anything after it in this run, such as tool calls and their results) — always sent;
2. the user's most relevant remembered facts (``parley.memory``), up to ``memory_tokens``,
   for a model that chooses its own tools (a smaller one took them for its own: "Hi, I'm Ana";
   the server answers questions about them, ``parley.answers.remembered``);
3. retrieved sources (``sources``: mappings with ``text`` and optional ``title``), numbered
   [1], [2] ..., dropped from the least relevant end. With sources, the latest turn becomes
   a grounded prompt: the sources, then the question, then the instruction to answer only
   from them and cite them (small local models follow context there far better than in a
   long system prompt);
4. the thread's rolling summary (``parley.summaries``);
5. as many earlier turns as fit, newest first. A turn (a user message and everything
   up to the next one) is kept or dropped whole, so a tool call never loses its result.

The system message holds the instructions and the summary; facts and sources, which
change from one message to the next, ride in the latest user turn. So the prompt up to
the latest turn changes only when the summary does, and the provider's prompt cache
(llama.cpp's KV cache, OpenAI's and Anthropic's prefix caching) keeps hitting. Measured
with SmolLM2 (``bench.memory --local``): with the facts in the system message, late
turns took 7.6x as long to the first token as without memory; in the latest turn, 2.6x.

The budget is ``min(context_window - reserve_tokens, context_budget)``: the model's
window minus room for the answer, capped so that big-window models do not pay for a
whole long thread on every turn. Per assistant, in ``[assistants.NAME.options]``:
``context_window``, ``context_budget``, ``reserve_tokens``, ``summary_tokens``,
``summary_model``, ``memory``, ``memory_top_k``, ``memory_tokens``, ``memory_model``;
the ``PARLEY_CONTEXT_*``/``PARLEY_MEMORY*`` settings are the defaults.

After a run completes, ``ContextBuilder.after_run`` schedules background work for its
thread: facts are extracted from the user's message, and when the turns after the
summary pass ``FOLD_AT`` of the history budget, the oldest are folded into the summary
until ``FOLD_TO`` is left. The work is durable: a completed run is marked as owing it
(``runs.upkeep_pending``) until ``upkept`` is told it is done, and the reaper hands the work
of a process that died to another (``parley.runs.reaper``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import and_, bindparam, or_, select

from parley import summaries
from parley.assistants import Assistant
from parley.config import Settings
from parley.facts import Fact, extract, extract_with_model
from parley.memory import Memory, MemoryFact
from parley.providers.base import ChatMessage, Provider, ProviderError, ProviderRequest, ToolCall
from parley.providers.registry import Providers, UnknownProvider
from parley.store.db import Database, Direct
from parley.store.schema import Message, Run, from_row
from parley.summaries import ThreadSummary
from parley.tokens import REPLY_OVERHEAD, TokenCounter, Tokens

log = structlog.get_logger(__name__)

FOLD_AT = 0.8
FOLD_TO = 0.5

MEMORY_HEADER = "What you remember about me from earlier conversations (use it when relevant):"
SUMMARY_HEADER = "Summary of the earlier part of this conversation:"
SOURCES_HEADER = "Sources:"
GROUNDING_INSTRUCTION = (
    "Answer briefly, using only the sources above, and cite them like [1]. "
    "If they do not answer the question, say you don't know."
)


class ContextOptions(BaseModel):
    """An assistant's context settings (its ``options``; other keys belong to other features)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    context_window: int | None = Field(default=None, ge=256)
    context_budget: int | None = Field(default=None, ge=128)
    reserve_tokens: int | None = Field(default=None, ge=0)
    summary_tokens: int | None = Field(default=None, ge=0)
    summary_model: str | None = None
    memory: bool = True
    memory_top_k: int = Field(default=8, ge=0)
    memory_tokens: int = Field(default=300, ge=0)
    memory_model: str | None = None


class InvalidContextOptions(ValueError):
    pass


def options_of(assistant: Assistant) -> ContextOptions:
    try:
        return ContextOptions.model_validate(assistant.options)
    except ValidationError as exc:
        raise InvalidContextOptions(f"assistant {assistant.name!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Budget:
    window: int
    reserve: int
    limit: int
    summary: int
    memory: int
    memory_top_k: int

    @property
    def prompt(self) -> int:
        """Tokens the prompt may use."""
        return max(0, min(self.window - self.reserve, self.limit))

    @classmethod
    def of(cls, options: ContextOptions, settings: Settings, provider: Provider | None = None) -> Budget:
        # A provider that knows its model's window (llama.cpp's n_ctx) may say so.
        provider_window = getattr(provider, "context_window", None)
        window = options.context_window or (
            provider_window if isinstance(provider_window, int) and provider_window > 0 else None
        )
        window = window or settings.context_window
        reserve = options.reserve_tokens
        if reserve is None:
            reserve = min(settings.context_reserve_tokens, window // 4)
        summary = options.summary_tokens
        if summary is None:
            summary = min(settings.context_summary_tokens, window // 8)
        return cls(
            window=window,
            reserve=reserve,
            limit=options.context_budget or settings.context_budget,
            summary=summary,
            memory=options.memory_tokens,
            memory_top_k=options.memory_top_k,
        )


@dataclass(slots=True)
class Context:
    """A built prompt and how it was put together."""

    request: ProviderRequest
    budget: Budget
    prompt_tokens: int
    raw_tokens: int
    history_messages: int = 0
    dropped_messages: int = 0
    summarized_messages: int = 0
    summary_tokens: int = 0
    facts: list[str] = field(default_factory=list)
    sources: int = 0

    def info(self) -> dict[str, Any]:
        """What the assistant message records about its prompt."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "raw_tokens": self.raw_tokens,
            "budget": self.budget.prompt,
            "window": self.budget.window,
            "history_messages": self.history_messages,
            "dropped_messages": self.dropped_messages,
            "summarized_messages": self.summarized_messages,
            "summary_tokens": self.summary_tokens,
            "facts": self.facts,
            "sources": self.sources,
        }


def to_chat_message(message: Message) -> ChatMessage:
    data = message.data or {}
    role = message.role if message.role in ("system", "user", "assistant", "tool") else "user"
    calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in data.get("tool_calls", [])]
    return ChatMessage(
        role=role,  # type: ignore[arg-type]
        content=message.content,
        tool_calls=calls,
        tool_call_id=data.get("tool_call_id"),
        name=data.get("name"),
    )


def to_chat_messages(message: Message) -> list[ChatMessage]:
    """A stored message as the model saw it: an assistant turn that used tools becomes, per
    round, the assistant's calls followed by their results, then the answer."""
    # Calls the server executed carry their output; a client's calls (OpenAI-compatible
    # API) do not: their results are the client's own tool messages that follow.
    records = [r for r in (message.data or {}).get("tool_calls") or [] if "output" in r]
    if message.role != "assistant" or not records:
        return [to_chat_message(message)]
    expanded: list[ChatMessage] = []
    for step in sorted({r.get("step", 1) for r in records}):
        batch = [r for r in records if r.get("step", 1) == step]
        calls = [ToolCall(r["id"], r["name"], r["arguments"]) for r in batch]
        expanded.append(ChatMessage("assistant", "", tool_calls=calls))
        expanded.extend(
            ChatMessage(
                "tool", json.dumps(r.get("output"), default=str), tool_call_id=r["id"], name=r["name"]
            )
            for r in batch
        )
    if message.content:
        expanded.append(ChatMessage("assistant", message.content))
    return expanded


def expanded(message: Message) -> list[tuple[ChatMessage, str]]:
    """``to_chat_messages`` with a token-count cache key per resulting message."""
    chats = to_chat_messages(message)
    if len(chats) == 1:
        return [(chats[0], message.id)]
    return [(chat, f"{message.id}#{index}") for index, chat in enumerate(chats)]


def group_turns(history: Sequence[Message]) -> list[list[Message]]:
    """Split history into turns: a user message and everything up to the next user message."""
    turns: list[list[Message]] = []
    for message in history:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def _sources_block(sources: Sequence[Mapping[str, Any]], start: int = 1) -> str:
    blocks = []
    for number, source in enumerate(sources, start=start):
        title = str(source.get("title") or "").strip()
        text = str(source.get("text") or "").strip()
        blocks.append(f"[{number}] {title}\n{text}" if title else f"[{number}] {text}")
    return "\n\n".join(blocks)


def grounded(question: str, sources: Sequence[Mapping[str, Any]]) -> str:
    """The latest user turn with retrieved sources: numbered sources, the question, how to answer."""
    return f"{SOURCES_HEADER}\n{_sources_block(sources)}\n\nQuestion: {question}\n\n{GROUNDING_INSTRUCTION}"


def build_context(
    assistant: Assistant,
    history: Sequence[Message],
    *,
    thread_id: str,
    counter: TokenCounter,
    budget: Budget,
    summary: ThreadSummary | None = None,
    facts: Sequence[MemoryFact] = (),
    sources: Sequence[Mapping[str, Any]] = (),
) -> Context:
    """The prompt for a run: see the module docstring for what goes in, and in which order.

    ``history`` is the thread after ``summary`` (or all of it), ending with the current turn.
    """
    turns = group_turns(history)
    current: list[Message] = turns.pop() if turns and turns[-1][0].role == "user" else []
    current_chat = [pair for m in current for pair in expanded(m)]
    left = budget.prompt - REPLY_OVERHEAD
    left -= sum(counter.message(chat, key=key) for chat, key in current_chat)
    instructions = assistant.instructions.strip()
    left -= counter.text(instructions) + counter.message(ChatMessage("system", ""))

    fact_lines: list[str] = []
    fact_ids: list[str] = []
    memory_left = budget.memory - counter.text(MEMORY_HEADER)
    for fact in facts if current_chat else ():
        cost = counter.text(f"- {fact.text}\n")
        if cost > memory_left or cost > left:
            continue
        fact_lines.append(f"- {fact.text}")
        fact_ids.append(fact.id)
        memory_left -= cost
        left -= cost
    if fact_lines:
        left -= counter.text(MEMORY_HEADER)

    kept_sources: list[Mapping[str, Any]] = []
    if sources and current_chat:
        left -= counter.text(grounded("", []))
        for number, source in enumerate(sources, start=1):
            cost = counter.text(_sources_block([source], start=number)) + 1
            if cost > left:
                break
            kept_sources.append(source)
            left -= cost

    summary_text = ""
    if summary is not None and summary.text:
        lines = summary.text.splitlines()
        header = counter.text(SUMMARY_HEADER)
        while lines and counter.text("\n".join(lines)) > min(left - header, budget.summary):
            lines.pop(0)
        summary_text = "\n".join(lines)
        if summary_text:
            left -= counter.text(summary_text) + header

    kept: list[list[Message]] = []
    dropped = 0
    for turn in reversed(turns):
        cost = sum(counter.message(chat, key=key) for m in turn for chat, key in expanded(m))
        if cost > left or dropped:
            dropped += len(turn)
            continue
        kept.append(turn)
        left -= cost
    kept.reverse()

    system_parts = [instructions] if instructions else []
    if summary_text:
        system_parts.append(SUMMARY_HEADER + "\n" + summary_text)
    blocks = [MEMORY_HEADER + "\n" + "\n".join(fact_lines)] if fact_lines else []
    # (message, cache key): stored messages are counted once; composed ones every time.
    prompt: list[tuple[ChatMessage, str | None]] = []
    if system_parts:
        prompt.append((ChatMessage("system", "\n\n".join(system_parts)), None))
    prompt.extend(pair for turn in kept for m in turn for pair in expanded(m))
    latest_user = max((i for i, (chat, _) in enumerate(current_chat) if chat.role == "user"), default=None)
    for index, (chat, key) in enumerate(current_chat):
        if (blocks or kept_sources) and index == latest_user:
            content = grounded(chat.content, kept_sources) if kept_sources else chat.content
            prompt.append((ChatMessage("user", "\n\n".join([*blocks, content])), None))
        else:
            prompt.append((chat, key))
    raw = REPLY_OVERHEAD + sum(counter.message_raw(chat, key=key) for chat, key in prompt)
    return Context(
        request=ProviderRequest(messages=[chat for chat, _ in prompt], thread_id=thread_id),
        budget=budget,
        prompt_tokens=counter.scale(raw),
        raw_tokens=raw,
        history_messages=sum(len(t) for t in kept),
        dropped_messages=dropped,
        summarized_messages=summary.messages if summary is not None else 0,
        summary_tokens=counter.text(summary_text),
        facts=fact_ids,
        sources=len(kept_sources),
    )


_AFTER_SUMMARY = or_(
    ThreadSummary.thread_id.is_(None),
    Message.created_at > ThreadSummary.until_created_at,
    and_(
        Message.created_at == ThreadSummary.until_created_at,
        Message.id > ThreadSummary.until_message_id,
    ),
)
# Built once: constructing a statement costs about as much as running it on SQLite.
_HISTORY = (
    select(Message, ThreadSummary)
    .outerjoin(ThreadSummary, ThreadSummary.thread_id == Message.thread_id)
    .where(Message.thread_id == bindparam("thread_id"), _AFTER_SUMMARY)
    .order_by(Message.created_at, Message.id)
)


_SUMMARY = select(ThreadSummary).where(ThreadSummary.thread_id == bindparam("thread_id"))
_MESSAGE_COLUMNS = len(Message.__table__.columns)


async def history_after(reader: Direct, thread_id: str) -> tuple[ThreadSummary | None, list[Message]]:
    """The thread's summary and the messages it does not cover, in order: one query."""
    rows = await reader.rows(_HISTORY, {"thread_id": thread_id})
    if not rows:
        found = await reader.first(_SUMMARY, {"thread_id": thread_id})
        return (from_row(ThreadSummary, found) if found is not None else None), []
    first = rows[0][_MESSAGE_COLUMNS:]
    summary = from_row(ThreadSummary, first) if first[0] is not None else None
    return summary, [from_row(Message, row[:_MESSAGE_COLUMNS]) for row in rows]


@dataclass(frozen=True, slots=True)
class _Completed:
    """What the background work needs to know about a completed run."""

    run_id: str
    user_id: int
    thread_id: str
    message_id: str | None
    text: str
    assistant: Assistant
    provider: Provider


class ContextBuilder:
    """Builds prompts, and keeps threads' summaries and users' memory up to date in the background."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        providers: Providers,
        *,
        tokens: Tokens | None = None,
        upkept: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        #: Told which runs' after-run work is done (``Lifecycle.upkept``).
        self.upkept = upkept
        self.settings = settings
        self.providers = providers
        self.tokens = tokens or Tokens()
        self.memory = Memory(db, enabled=settings.memory)
        self._pending: dict[str, list[_Completed]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def validate(self, assistants: Sequence[Assistant]) -> None:
        """Fail at start-up, naming the assistant, on context options that are not valid."""
        for assistant in assistants:
            options_of(assistant)

    async def memory_on(self, assistant: Assistant, user_id: int) -> bool:
        return options_of(assistant).memory and await self.memory.user_enabled(user_id)

    async def build(
        self,
        run: Run,
        assistant: Assistant,
        provider: Provider,
        *,
        sources: Sequence[Mapping[str, Any]] = (),
    ) -> Context:
        """The prompt for ``run``'s first model turn, budgeted for ``provider``."""
        options = options_of(assistant)
        budget = Budget.of(options, self.settings, provider)
        async with self.db.read() as reader:  # straight to the driver: before the first token
            facts: list[MemoryFact] = []
            # A small model takes the user's facts for its own ("Hi, I'm Ana"): it gets none, and
            # the server answers what the user asks about them (``parley.answers.remembered``).
            if options.memory and provider.chooses_tools:
                facts = await self.memory.recall(reader, run.user_id, run.input, budget.memory_top_k)
            summary, history = await history_after(reader, run.thread_id)
        return build_context(
            assistant,
            history,
            thread_id=run.thread_id,
            counter=self.tokens.counter(provider),
            budget=budget,
            summary=summary,
            facts=facts,
            sources=sources,
        )

    # -- after a run ----------------------------------------------------------------------

    def observe(self, provider: Provider, prompt: Mapping[str, Any], input_tokens: int) -> None:
        """Calibrate token estimates with the input tokens a provider reported for a prompt."""
        if prompt.get("raw_tokens"):
            self.tokens.observe(provider, int(prompt["raw_tokens"]), input_tokens)

    def after_run(self, run: Run, assistant: Assistant, provider: Provider) -> None:
        """Schedule the thread's background upkeep after ``run`` completed (never blocks)."""
        job = _Completed(
            run.id, run.user_id, run.thread_id, run.input_message_id, run.input, assistant, provider
        )
        self._pending.setdefault(run.thread_id, []).append(job)
        if run.thread_id not in self._workers:
            self._workers[run.thread_id] = asyncio.create_task(
                self._upkeep(run.thread_id), name=f"context-{run.thread_id}"
            )

    async def _upkeep(self, thread_id: str) -> None:
        try:
            while jobs := self._pending.pop(thread_id, []):
                for job in jobs:
                    try:
                        await self.remember(job)
                    except Exception:
                        log.exception("memory_extraction_failed", run_id=job.run_id)
                try:
                    await self.fold(thread_id, jobs[-1].assistant, jobs[-1].provider)
                except Exception:
                    log.exception("summary_failed", thread_id=thread_id)
                if self.upkept is not None:
                    try:
                        await self.upkept([job.run_id for job in jobs])
                    except Exception:
                        log.exception("upkeep_not_recorded", thread_id=thread_id)
        finally:
            self._workers.pop(thread_id, None)

    async def idle(self) -> None:
        """Wait until no background upkeep is pending (tests and benchmarks)."""
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    async def aclose(self, timeout: float = 5.0) -> None:
        workers = list(self._workers.values())
        if workers:
            _, late = await asyncio.wait(workers, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._pending.clear()

    async def remember(self, job: _Completed) -> None:
        """Store the facts the user stated in the run's message."""
        if job.message_id is None or not await self.memory_on(job.assistant, job.user_id):
            return
        options = options_of(job.assistant)
        model = options.memory_model or self.settings.memory_model
        found: list[Fact] | None = None
        if model:
            try:
                found = await extract_with_model(self.providers.route(model), job.text)
            except (ProviderError, UnknownProvider, ValueError) as exc:
                log.warning("memory_model_failed", model=model, error=str(exc))
        if found is None:
            found = extract(job.text)
        stored = await self.memory.remember(job.user_id, job.thread_id, job.message_id, found)
        if stored:
            log.info("memory_updated", run_id=job.run_id, facts=len(stored))

    async def fold(self, thread_id: str, assistant: Assistant, provider: Provider) -> bool:
        """Fold the oldest turns into the summary once the rest would not fit comfortably."""
        options = options_of(assistant)
        budget = Budget.of(options, self.settings, provider)
        counter = self.tokens.counter(provider)
        async with self.db.read() as reader:
            summary, history = await history_after(reader, thread_id)
        turns = group_turns(history)
        if len(turns) < 2:
            return False
        sizes = [
            sum(counter.message(chat, key=key) for m in turn for chat, key in expanded(m)) for turn in turns
        ]
        room = (
            budget.prompt
            - REPLY_OVERHEAD
            - counter.text(assistant.instructions)
            - budget.summary
            - budget.memory
        )
        remaining = sum(sizes)
        if remaining <= room * FOLD_AT:
            return False
        count = 0
        while count < len(turns) - 1 and remaining > room * FOLD_TO:
            remaining -= sizes[count]
            count += 1
        folded = [m for turn in turns[:count] for m in turn]
        previous = summary.text if summary is not None else ""
        text, method = "", "extractive"
        model = options.summary_model or self.settings.summary_model
        if model and budget.summary:
            try:
                text = await summaries.with_model(
                    self.providers.route(model), previous, folded, budget.summary
                )
                method = "model"
            except (ProviderError, UnknownProvider, ValueError) as exc:
                log.warning("summary_model_failed", model=model, error=str(exc))
        if method == "extractive":
            text = summaries.extractive(previous, folded, budget.summary, counter.text)
        saved = await summaries.save(
            self.db, thread_id, summary, text=text, until=folded[-1], folded=len(folded), method=method
        )
        if saved:
            log.info("thread_summarized", thread_id=thread_id, folded=len(folded), method=method)
        return saved
