"""Running Parley in this event loop, for tests, benchmarks and demos (shipped in the package,
like the scripted provider)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """``app`` under uvicorn on a free loopback port, in this event loop; yields its base URL.

    Start-up failures are raised, not hidden; on exit the server drains and stops (30 s at most).
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during start-up")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    parley = getattr(getattr(app, "state", None), "parley", None)
    if parley is not None:
        # The knowledge syncs in the background of a started server; tests read it in place.
        await parley.first_start.wait()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
