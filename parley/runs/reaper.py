"""What a dead process leaves behind, resolved by any live one: runs whose lease expired (the
recovery policy is ``Lifecycle.reap``'s), and completed runs whose after-run memory work
(facts, summary) was never done."""

from __future__ import annotations

import structlog

from parley.assistants import Assistants, UnknownAssistant
from parley.bus import Bus
from parley.context import ContextBuilder
from parley.providers.base import ProviderError
from parley.providers.registry import Providers, UnknownProvider
from parley.runs.lifecycle import QUEUED, Lifecycle

log = structlog.get_logger(__name__)

#: A completed run's memory work is taken over once it has waited this long.
UPKEEP_GRACE_SECONDS = 60.0


class Reaper:
    def __init__(
        self,
        lifecycle: Lifecycle,
        bus: Bus,
        context: ContextBuilder,
        assistants: Assistants,
        providers: Providers,
    ) -> None:
        self._lifecycle = lifecycle
        self._bus = bus
        self._context = context
        self._assistants = assistants
        self._providers = providers

    async def reap(self) -> int:
        """Resolve expired leases; wake the workers for runs that went back to the queue."""
        requeued = await self._lifecycle.reap()
        if requeued:
            await self._bus.publish(QUEUED)
        return len(requeued)

    async def upkeep(self) -> int:
        """Schedule the memory work that a dead process left undone."""
        runs = await self._lifecycle.upkeep_due(older_than=UPKEEP_GRACE_SECONDS)
        for run in runs:
            try:
                assistant = self._assistants.get(run.assistant)
                provider = self._providers.route(self._assistants.route_of(assistant)).primary
            except (UnknownAssistant, UnknownProvider, ProviderError):
                await self._lifecycle.upkept([run.id])  # nothing to do it with any more
                continue
            self._context.after_run(run, assistant, provider)
        if runs:
            log.info("upkeep_taken_over", runs=len(runs))
        return len(runs)
