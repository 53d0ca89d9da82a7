"""The processes: ``parley serve`` (HTTP, with an embedded worker unless ``PARLEY_WORKER=off``)
and ``parley worker`` (runs only). Both shut down gracefully on SIGTERM or Ctrl-C: they stop
taking runs, let running ones finish within ``PARLEY_SHUTDOWN_GRACE_SECONDS``, end the rest with
their terminal event (so every reader gets one), and only then close connections."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Callable
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI
from prometheus_client import start_http_server

from parley.app import Parley
from parley.config import Settings
from parley.logs import wants_json
from parley.startup import AnnouncingServer

log = structlog.get_logger(__name__)

#: How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms). The
#: event loop gives the GIL up around every socket call; while a worker thread computes (an
#: ingest's rows, an index build), taking it back costs up to one interval each time, so a loop
#: that answers two hundred requests at once waited a second and more. docs/BENCHMARKS.md, "The
#: GIL's switch interval".
SWITCH_INTERVAL = 0.0005


def settle_process() -> None:
    """Once the process has built what it keeps: the GIL handed over sooner, and what the imports
    and start-up built moved out of the cyclic collector's way (its collections then scan only
    what requests create: shorter pauses on the streaming path)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.collect()
    gc.freeze()


class _Server(AnnouncingServer):
    """uvicorn, draining Parley's runs before it closes the connections that stream them (and
    saying once where it is ready)."""

    def __init__(self, config: uvicorn.Config, parley: Parley) -> None:
        as_json = wants_json(parley.settings.log_json)
        super().__init__(config, assistants=parley.assistants, as_json=as_json)
        self._parley = parley

    async def shutdown(self, sockets: Any = None) -> None:
        await self._parley.drain()
        await super().shutdown(sockets)


def serve(app: FastAPI, settings: Settings, **uvicorn_options: Any) -> None:
    parley: Parley = app.state.parley
    grace = settings.shutdown_grace_seconds
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        # Streams end with their run's terminal event during the drain; then a few seconds more.
        timeout_graceful_shutdown=int(grace) + 5,
        **uvicorn_options,
    )
    # uvicorn raises the SIGTERM it shut down for again, once it has, with the handler it found.
    # The default one kills the process at once: exit handlers never ran, and Python's resource
    # tracker then warned about the ingest pool's semaphores, the log's last line and not JSON.
    # With this one the process exits as it does after Ctrl-C, with status 0.
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        _Server(config, parley).run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run_worker(settings: Settings, *, metrics_port: int | None = None) -> None:
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_worker(settings, metrics_port))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``parley serve`` runs on (uvicorn's choice: uvloop where it is installed,
    as ``uvicorn[standard]`` does on Linux and macOS), for ``parley worker`` too: one engine,
    one loop, whichever process embeds it (docs/BENCHMARKS.md, "Scale-out")."""
    return uvicorn.Config(app="parley.app:create_app", loop="auto").get_loop_factory()


async def _worker(settings: Settings, metrics_port: int | None) -> None:
    parley = Parley(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await parley.start()
    settle_process()
    if metrics_port is not None:
        # Prometheus' own exposition server (a thread): /metrics for the worker's counters.
        start_http_server(metrics_port, addr=settings.host, registry=parley.metrics.registry)
    assert parley.worker is not None
    log.info(
        "parley_worker_ready",
        worker=parley.worker.id,
        concurrency=parley.worker.concurrency,
        loop=type(loop).__module__.split(".")[0],
    )
    try:
        await stop.wait()
        log.info("parley_worker_stopping", running=parley.worker.running)
        await parley.drain()
    finally:
        await parley.stop()
