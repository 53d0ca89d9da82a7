"""``create_app(settings)``: builds every object of a Parley server, in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from starlette.middleware.cors import CORSMiddleware

from parley import __version__, errors, web
from parley.agent import Agent
from parley.api import account as account_api
from parley.api import conversations, embeddings, responses
from parley.api import experiments as experiments_api
from parley.api import feedback as feedback_api
from parley.api import files as files_api
from parley.api import knowledge as knowledge_api
from parley.api import memory as memory_api
from parley.api import openai as openai_api
from parley.api import runs as runs_api
from parley.api import system as system_api
from parley.api import threads as threads_api
from parley.api import usage as usage_api
from parley.assistants import Assistants
from parley.budgets import Budgets
from parley.bus import Bus, LocalBus
from parley.chores import Chores
from parley.compat import chatbot_sse, faq, jobs, promptlab
from parley.compat import shop as shop_compat
from parley.config import Settings
from parley.context import ContextBuilder
from parley.events import EventLog
from parley.experiments import Experiments, load_config
from parley.files import Files
from parley.http import BodyLimit, OriginGuard, RequestContext, TextGuard
from parley.keys import Authenticator, check_bind, presented_prefix
from parley.knowledge.bases import Knowledge
from parley.knowledge.jobs import Jobs
from parley.knowledge.workers import Workers
from parley.metrics import Metrics
from parley.providers.base import Provider
from parley.providers.registry import Providers
from parley.ratelimit import RateLimiter, RateLimitHeaders
from parley.responses import Responses
from parley.runs.control import Runs
from parley.runs.lifecycle import Lifecycle
from parley.runs.reaper import Reaper
from parley.runs.worker import Worker
from parley.shop import Shop
from parley.startup import FirstStart, knowledge_paths
from parley.store.db import Database
from parley.tools import shop as shop_tools
from parley.tools.base import Tools
from parley.tools.choice import HybridRouter, KeywordRouter
from parley.users import Principal

log = structlog.get_logger(__name__)

CORS_REQUEST_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key", "Last-Event-ID"]
CORS_EXPOSED_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
]


class Parley:
    """Every long-lived object of one server process (``parley serve``) or worker process
    (``parley worker``: the same objects, without the HTTP layer)."""

    def __init__(self, settings: Settings, *, providers: dict[str, Provider] | None = None) -> None:
        if settings.worker == "off" and settings.is_sqlite:
            raise ValueError(
                "PARLEY_WORKER=off needs PostgreSQL (PARLEY_DATABASE_URL): on SQLite no other process "
                "can execute this server's runs"
            )
        self.settings = settings
        self.metrics = Metrics()
        self.db = Database(
            settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            sqlite_driver=settings.sqlite_driver,
        )
        self.bus = make_bus(settings, self.metrics)
        self.log = EventLog(self.db, self.bus, on_commit=self.metrics.events_committed)
        self.providers = Providers(settings, providers)
        self.assistants = Assistants.load(settings.model, settings.config_file)
        self.knowledge = Knowledge(
            self.db,
            embeddings=settings.embeddings,
            cache_dir=settings.models_dir,
            questions=settings.question_embedding,
            chunks=settings.chunk_embedding,
            workers=Workers(settings.ingest_workers),
        )
        self.shop = Shop(
            self.db,
            tax_rate=settings.shop_tax_rate,
            cart_hold_seconds=settings.shop_cart_hold_seconds or None,
            meaning=self.knowledge.embedder,  # products by meaning when none has the query's words
        )
        self.tools = Tools(
            shop_tools.TOOLS,
            services=[self.shop],
            max_steps=settings.tool_max_steps,
            timeout=settings.tool_timeout_seconds,
            ref_window=settings.tool_ref_window,
            ref_max_age=settings.tool_ref_max_age_seconds,
            router=HybridRouter(KeywordRouter(settings.tool_router_threshold)),
        )
        for assistant in self.assistants.all():
            self.tools.select(assistant.tools)  # an unknown tool name fails here, at start
        self.jobs = Jobs(self.knowledge)
        # The configured knowledge syncs in the background; one process of a cluster does it.
        self.first_start = FirstStart(
            self.knowledge,
            self.assistants,
            knowledge_paths(settings),
            exclusive=lambda: self.db.exclusively("knowledge-sync"),
            preload=settings.worker == "on",
        )
        self.experiments = Experiments(
            self.db, self.assistants, self.providers, load_config(settings.config_file)
        )
        self.auth = Authenticator(self.db, settings)
        self.limiter = RateLimiter.from_settings(settings, self.metrics)
        self.budgets = Budgets(self.db, settings, self.assistants)
        self.lifecycle = Lifecycle(
            self.db,
            self.log,
            self.metrics,
            bus=self.bus,
            lease_seconds=settings.lease_seconds,
            assign=self.experiments.assign,
            admit=self.budgets.admit,
        )
        self.context = ContextBuilder(self.db, settings, self.providers, upkept=self.lifecycle.upkept)
        self.context.validate(self.assistants.all())
        self.agent = Agent(
            self.db, self.log, self.context, self.metrics, tools=self.tools, knowledge=self.knowledge
        )
        self.worker = (
            Worker(
                self.lifecycle,
                self.log,
                self.bus,
                self.agent,
                self.assistants,
                self.providers,
                self.metrics,
                concurrency=settings.max_concurrent_runs,
                apply_variant=self.experiments.apply,
                guard_route=self.budgets.guard,
            )
            if settings.worker == "on"
            else None
        )
        self.runs = Runs(
            self.db, self.log, self.lifecycle, self.bus, self.worker, cancel_wait=settings.cancel_wait_seconds
        )
        self.runs.on_delete.append(self.shop.clear_cart)  # a deleted thread's cart gives its stock back
        self.responses = Responses(self.db, self.runs, self.log)
        self.reaper = Reaper(self.lifecycle, self.bus, self.context, self.assistants, self.providers)
        self.chores = Chores(self.db)
        self.files = Files(
            self.db,
            settings.resolved_files_dir,
            max_bytes=settings.max_upload_bytes,
            quota_bytes=settings.upload_quota_bytes,
        )
        self.ready = False

    @property
    def local_user(self) -> Principal | None:
        return self.auth.local_user

    async def start(self) -> None:
        if self.settings.is_sqlite:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await self.db.upgrade()
        await self.auth.start()
        await self.experiments.sync_config()
        await shop_tools.start(self.shop, self.tools, demo_catalog=self.settings.shop_demo_catalog)
        assert self.local_user is not None
        await self.knowledge.start(owner_id=self.local_user.user_id)
        await self.jobs.start()
        await self.log.start()
        await self.bus.start()
        await self.providers.prepare({self.assistants.route_of(a) for a in self.assistants.all()})
        await self.providers.prepare(await self.experiments.model_routes())
        # Runs of a process that died on this host are resolved now; others' live leases wait.
        await self.reaper.reap()
        if self.worker is not None:
            await self.worker.start()
        lease = self.settings.lease_seconds
        self.chores.every("reap", lease / 2, self.reaper.reap)
        self.chores.every("upkeep", 30.0, self.reaper.upkeep, once=True)
        if self.shop.cart_hold_seconds is not None:
            every = min(60.0, self.shop.cart_hold_seconds / 4)
            self.chores.every("idle-carts", every, self._release_idle_carts, once=True)
        self.ready = True
        self.first_start.begin(self.local_user.user_id, self.settings.data_dir)
        log.info(
            "parley_started",
            version=__version__,
            database=self.db.engine.url.render_as_string(),
            worker=self.worker.id if self.worker is not None else None,
            bus=type(self.bus).__name__,
        )

    async def _release_idle_carts(self) -> None:
        released = await self.shop.release_idle_carts()
        if released:
            log.info("idle_carts_released", units=released, hold_seconds=self.shop.cart_hold_seconds)

    async def drain(self, grace: float | None = None) -> None:
        """Stop taking runs; let running ones finish for the grace period, then end the rest
        with their terminal event, so that every reader receives one (SIGTERM)."""
        self.runs.accepting = False
        if self.worker is not None:
            await self.worker.stop(self.settings.shutdown_grace_seconds if grace is None else grace)

    async def stop(self) -> None:
        self.ready = False
        await self.first_start.stop()
        await self.chores.stop()
        await self.drain(0)
        await self.jobs.close()
        await self.knowledge.close()
        await self.context.aclose()
        await self.log.stop()
        await self.providers.aclose()
        await self.bus.close()
        await self.limiter.aclose()
        await self.db.close()

    async def authenticate(self, request: Request) -> Principal:
        """The caller (API key, or the local user of a loopback server), within its rate limit."""
        principal = await self.limiter.authenticate(
            request, lambda: self.auth.authenticate(request), credential_prefix=presented_prefix(request)
        )
        await self.limiter.admit(request, principal)
        return principal


def make_bus(settings: Settings, metrics: Metrics | None = None) -> Bus:
    """The wake-up bus ``settings.bus`` names (``auto``: Redis when configured, else PostgreSQL's
    LISTEN/NOTIFY on PostgreSQL, else in-process)."""
    kind = settings.bus
    if kind == "auto":
        kind = "redis" if settings.redis_url else "local" if settings.is_sqlite else "postgres"
    if kind == "redis":
        if not settings.redis_url:
            raise ValueError("PARLEY_BUS=redis needs PARLEY_REDIS_URL")
        from parley.breaker import Breaker
        from parley.bus.redis import SEND_TIMEOUT, RedisBus

        breaker = Breaker(
            "bus",
            timeout=SEND_TIMEOUT,  # sends are in the background: no request waits for them
            cooldown=settings.redis_cooldown_seconds,
            on_change=metrics.breaker_changed if metrics is not None else None,
            on_refused=metrics.breaker_refused if metrics is not None else None,
        )
        return RedisBus(settings.redis_url, breaker=breaker)
    if kind == "postgres":
        if settings.is_sqlite:
            raise ValueError("PARLEY_BUS=postgres needs a PostgreSQL PARLEY_DATABASE_URL")
        from parley.bus.postgres import PostgresBus

        return PostgresBus(settings.resolved_database_url)
    return LocalBus()


def create_app(settings: Settings | None = None, *, providers: dict[str, Provider] | None = None) -> FastAPI:
    settings = settings or Settings()
    check_bind(settings)
    parley = Parley(settings, providers=providers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await parley.start()
        try:
            yield
        finally:
            await parley.stop()

    app = FastAPI(
        title="Parley",
        version=__version__,
        summary="A self-hosted AI assistant server.",
        lifespan=lifespan,
    )
    app.state.parley = parley
    errors.install(app)
    for router in (
        threads_api.router,
        runs_api.router,
        files_api.router,
        account_api.router,
        system_api.router,
        chatbot_sse.router,
        jobs.router,
        openai_api.router,
        responses.router,
        conversations.router,
        embeddings.router,
        shop_compat.router,
        shop_compat.health,
        experiments_api.router,
        feedback_api.router,
        usage_api.router,
        promptlab.router,
        memory_api.router,
        knowledge_api.router,
        faq.router,
    ):
        app.include_router(router, responses=errors.RESPONSES)
    app.add_middleware(RateLimitHeaders)
    web.install(app)
    app.add_middleware(TextGuard)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(OriginGuard, allowed_origins=settings.cors_origins)
    # Keys travel in headers, never in cookies: no credentials mode, so no ambient authority to lend.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=600,
    )
    app.add_middleware(RequestContext, metrics=parley.metrics)
    return app
