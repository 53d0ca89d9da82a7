"""Settings, read from ``PARLEY_*`` environment variables (and a ``.env`` file).

Nothing here is built at import time: ``Settings()`` is called by the CLI or by
whoever calls ``create_app``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_threads() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".parley")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; defaults to a SQLite file in the data dir.",
    )
    model: str = Field(
        default="local:smollm2",
        description="Default model route of every assistant: provider:model, comma-separated = fallback chain.",
    )
    config_file: Path | None = Field(default=None, description="Optional TOML file with assistants etc.")

    host: str = "127.0.0.1"
    port: int = 8000
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="`parley serve` closes a connection whose request headers take longer.",
    )
    keep_alive_seconds: int = Field(
        default=5, ge=1, description="`parley serve` closes a connection idle this long between requests."
    )
    max_connections_per_client: int = Field(
        default=256, ge=1, description="Connections one client address may hold open at once (more: 429)."
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Connections and requests in flight at once (more: 503); default: the open-file "
        "limit less 256 kept for the database, models and logs.",
    )

    max_concurrent_runs: int = Field(default=32, ge=1, description="Runs executing at once in this process.")
    worker: Literal["on", "off"] = Field(
        default="on",
        description="on: `parley serve` executes runs too (an embedded worker); off: API only, "
        "runs execute in `parley worker` processes sharing the PostgreSQL database.",
    )
    lease_seconds: float = Field(
        default=15.0,
        ge=2.0,
        le=30.0,
        description="How long a worker holds a run without a heartbeat; a dead worker's runs are "
        "resolved within about this long (heartbeats every third of it).",
    )
    shutdown_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM, how long running runs may go on before they end as interrupted.",
    )
    bus: Literal["auto", "local", "postgres", "redis"] = Field(
        default="auto",
        description="Wake-ups between processes: auto = redis with PARLEY_REDIS_URL, else postgres "
        "on PostgreSQL, else local (one process).",
    )
    sse_ping_seconds: float = Field(default=15.0, gt=0)
    cancel_wait_seconds: float = Field(default=2.0, gt=0)
    max_input_chars: int = Field(default=32_000, ge=1)
    max_request_bytes: int = Field(default=1_048_576, ge=1024, description="Largest JSON body accepted.")
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="NORMAL survives a killed process (WAL); FULL also survives a power cut.",
    )
    sqlite_driver: Literal["inline", "thread"] = Field(
        default="inline",
        description="inline: SQLite calls run on the event loop (fast for small statements); "
        "thread: in aiosqlite's worker thread.",
    )
    embeddings: Literal["minilm", "minilm-torch", "hash", "none"] = Field(
        default="minilm",
        description="Knowledge search embeddings: minilm ([embeddings] extra; ONNX Runtime, else torch), "
        "minilm-torch, hash (a fast fake) or none (BM25 only).",
    )
    question_embedding: Literal["int8", "float32"] = Field(
        default="int8",
        description="How minilm on ONNX Runtime embeds a search's question: int8 (a quantized copy of "
        "the model, ~40% faster, same retrieval quality) or float32 (the exported model itself).",
    )
    chunk_embedding: Literal["int8", "float32"] = Field(
        default="float32",
        description="How minilm on ONNX Runtime embeds documents' chunks: float32 (the exported model) or "
        "int8 (the questions' quantized copy: ~1.6x the chunks per second; SciFact nDCG@10 -0.001, "
        "StackFAQ top-1 -0.6 points, docs/BENCHMARKS.md).",
    )
    knowledge: dict[str, list[Path]] | None = Field(
        default=None,
        description='Knowledge bases kept in sync with files at start, e.g. {"parley-faq": ["faq.md"]}; '
        "unset: the demo knowledge of the built-in assistants (the Parley FAQ for support, generated "
        "demo CVs for recruiter) plus the config file's [knowledge] table; {} syncs nothing.",
    )
    knowledge_max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    models_dir: Path | None = Field(
        default=None,
        description="Where the exported ONNX embedding model is kept; default: the user's cache folder "
        "(~/.cache/parley/models), filled at install by `make install` (python -m parley.knowledge.minilm_onnx).",
    )
    knowledge_job_bytes: int = Field(
        default=1024 * 1024,
        ge=0,
        description="A knowledge document at least this large is ingested as a job (202, with progress).",
    )
    knowledge_max_batch_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description="The most one batch upload may hold, archives unpacked.",
    )
    ingest_workers: Literal["process", "thread"] = Field(
        default="process",
        description="Where ingests parse and tokenize: process (a pool of worker processes: the event loop "
        "keeps the GIL) or thread.",
    )
    local_threads: int = Field(default_factory=_default_threads, ge=1)
    local_context_tokens: int = Field(default=4096, ge=256, description="Context window of a local model.")
    local_cache_mb: int = Field(
        default=256, ge=0, description="Memory for local models' per-thread prompt caches (KV state)."
    )

    provider_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Longest wait for a remote provider's TCP/TLS connection."
    )
    provider_first_token_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        description="Longest wait for a remote provider's first token (headers included) before it "
        "counts as failed and the route fails over.",
    )
    provider_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest silence between two tokens of a remote provider before it counts as failed "
        "(keep-alive bytes that carry no token do not count).",
    )
    provider_attempts: int = Field(default=3, ge=1, description="Tries per provider before failing over.")
    provider_backoff_seconds: float = Field(default=0.5, ge=0, description="First retry delay (doubles).")
    provider_backoff_max_seconds: float = Field(default=8.0, ge=0)
    provider_retry_after_max_seconds: float = Field(
        default=30.0, ge=0, description="Longest Retry-After a run waits for; beyond it, fail over or fail."
    )
    provider_cooldown_failures: int = Field(
        default=3, ge=1, description="Consecutive failures after which a provider cools down."
    )
    provider_cooldown_seconds: float = Field(default=30.0, ge=0)
    fallback_message: str = Field(
        default="Sorry, I can't reach any of my language models right now. Please try again in a moment.",
        min_length=1,
        description="What the user is told when every provider of a route failed.",
    )
    tool_max_steps: int = Field(
        default=8, ge=1, description="Tool rounds a run may take before it must answer."
    )
    tool_timeout_seconds: float = Field(default=30.0, gt=0)
    tool_ref_window: int = Field(
        default=20, ge=0, description="Assistant turns back whose tool results may be referenced by id."
    )
    tool_ref_max_age_seconds: float | None = Field(
        default=None, gt=0, description="Also forget ids shown longer ago than this (the seed used 30 min)."
    )
    tool_router_threshold: float = Field(
        default=0.3, ge=0, le=1, description="Confidence below which server-side tool choice calls no tool."
    )
    shop_demo_catalog: bool = Field(default=True, description="Load the demo catalog when the shop is empty.")
    shop_tax_rate: float = Field(
        default=0.10, ge=0, description="Estimated tax on cart totals (seed 000: 10%)."
    )
    shop_cart_hold_seconds: float = Field(
        default=3600,
        ge=0,
        description="A cart untouched this long gives its reserved stock back (0: carts hold it for ever).",
    )
    context_window: int = Field(
        default=8192, ge=256, description="Model window when neither the assistant nor the provider says."
    )
    context_budget: int = Field(
        default=4096, ge=128, description="Most prompt tokens per model call; older turns are summarized."
    )
    context_reserve_tokens: int = Field(default=1024, ge=0, description="Window room kept for the answer.")
    context_summary_tokens: int = Field(default=400, ge=0, description="Size of a thread's rolling summary.")
    summary_model: str | None = Field(
        default=None, description="Route that writes summaries (else extractive)."
    )
    memory: bool = Field(default=True, description="Remember facts users state; off for everyone when false.")
    memory_model: str | None = Field(default=None, description="Route that extracts facts (else rules).")
    log_level: str = "INFO"
    log_json: bool | None = Field(
        default=None, description="JSON lines; unset: JSON unless stderr is a terminal (then readable lines)."
    )

    auth: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="auto: API keys required, except that a server bound to loopback lets anonymous "
        "local callers in as the local user; required: always; off: never (loopback only).",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names (comma-separated) that count as this machine besides localhost, "
        "127.0.0.1 and [::1]: anonymous callers are the local user only on requests addressed to them.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins (comma-separated, e.g. 'http://localhost:3000') that may call "
        "the API from another origin; a state-changing request from any other origin is a 403.",
    )
    redis_url: str | None = Field(
        default=None, description="Redis for rate-limit counters (else memory) and the wake-up bus."
    )
    rate_limit: str = Field(
        default="120/minute",
        description="Default limit per API key (or per IP when anonymous) and endpoint class, "
        "e.g. '120/minute' or '10/second;600/hour'; per-class limits go in the config file.",
    )
    rate_limit_prefix: str = Field(default="parley", description="Namespace of the counters in Redis.")
    redis_timeout_seconds: float = Field(
        default=0.2,
        gt=0,
        description="Longest a rate-limit check waits for Redis; beyond it the request passes unchecked. "
        "After 3 failures in a row, requests skip Redis at once (circuit open) until a ping succeeds.",
    )
    redis_cooldown_seconds: float = Field(
        default=5.0,
        gt=0,
        description="While Redis is failing, how often a background ping checks whether it is back.",
    )
    daily_token_budget: int | None = Field(
        default=None, ge=1, description="Tokens a user may spend per UTC day (unset: no budget)."
    )
    budget_output_tokens: int = Field(
        default=1024, ge=1, description="Output tokens reserved (and allowed) per model turn under a budget."
    )
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="Largest file upload.")
    upload_quota_bytes: int = Field(default=200 * 1024 * 1024, ge=1, description="Stored bytes per user.")
    files_dir: Path | None = Field(
        default=None,
        description="Where uploaded files are stored (default: files/ in the data dir); every process "
        "of a cluster must share it.",
    )

    @field_validator("model")
    @classmethod
    def _route_not_empty(cls, value: str) -> str:
        if not [part for part in value.split(",") if part.strip()]:
            raise ValueError("PARLEY_MODEL must name at least one provider:model")
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_names(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [str(host).strip().lower().rstrip(".") for host in value]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            return value
        origins = []
        for raw in value:
            origin = str(raw).strip().rstrip("/").lower()
            parts = urlsplit(origin)
            if origin == "*" or parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                # "*" would let every web page drive an anonymous loopback server.
                raise ValueError(
                    f"PARLEY_CORS_ORIGINS lists origins like 'http://localhost:3000' "
                    f"(scheme://host[:port], no '*', no path), not {raw!r}"
                )
            origins.append(origin)
        return origins

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        from limits import parse_many

        try:
            if parse_many(value):
                return value
        except ValueError:
            pass
        raise ValueError(
            f"PARLEY_RATE_LIMIT must look like '120/minute' or '10/second;1000/hour', not {value!r}"
        )

    @property
    def resolved_files_dir(self) -> Path:
        return self.files_dir if self.files_dir is not None else self.data_dir / "files"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'parley.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
