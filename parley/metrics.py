"""Prometheus metrics, one registry per app (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "parley_http_requests",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "parley_http_request_duration_seconds",
            "Time to the response headers, by route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.runs = Counter(
            "parley_runs",
            "Runs that ended, by assistant and outcome.",
            ["assistant", "status"],
            registry=self.registry,
        )
        self.ttft_seconds = Histogram(
            "parley_time_to_first_token_seconds",
            "From run start to the first text delta, by assistant.",
            ["assistant"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events_written = Counter(
            "parley_events_written", "Events committed to the event log.", registry=self.registry
        )
        self.event_commits = Counter(
            "parley_event_commits",
            "Group commits of the event log (events written / commits = events per commit).",
            registry=self.registry,
        )
        self.runs_active = Gauge("parley_runs_active", "Runs executing now.", registry=self.registry)
        self.sse_streams = Gauge("parley_sse_streams", "Open SSE streams.", registry=self.registry)
        self.provider_fallbacks = Counter(
            "parley_provider_fallbacks",
            "Provider failovers.",
            ["from_provider", "to_provider"],
            registry=self.registry,
        )

        self.tool_calls = Counter(
            "parley_tool_calls",
            "Tool calls by tool and outcome (ok, error, rejected).",
            ["tool", "status"],
            registry=self.registry,
        )

        self.breaker_open = Gauge(
            "parley_breaker_open",
            "1 while the circuit breaker of a backing service is open (ratelimit: the limiter's Redis; "
            "bus: the Redis that carries wake-ups between processes).",
            ["breaker"],
            registry=self.registry,
        )
        self.breaker_skipped = Counter(
            "parley_breaker_skipped_calls",
            "Calls to a backing service that the request went on without, by reason: "
            "open (breaker open), timeout, error.",
            ["breaker", "reason"],
            registry=self.registry,
        )

    def breaker_changed(self, name: str, state: str) -> None:
        self.breaker_open.labels(name).set(1 if state == "open" else 0)

    def breaker_refused(self, name: str, reason: str) -> None:
        self.breaker_skipped.labels(name, reason).inc()

    def events_committed(self, count: int) -> None:
        """One group commit of ``count`` events (the event log's ``on_commit``)."""
        self.events_written.inc(count)
        self.event_commits.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
