"""Experiments: A/B variants of an assistant, and who gets which.

An experiment targets one assistant and splits its users between variants by weight.
Each variant may override the assistant's instructions, its model route and its sampling
settings (temperature, max_tokens). Experiments come from the config file
(``[experiments.KEY]``) or from the admin API; their status (draft → running ⇄ stopped)
is managed through the API and survives restarts. At most one experiment runs per
assistant at a time, enforced by a unique column (``running_assistant``) so that two
processes cannot both start one.

Assignment: a user's variant is a pure function of (experiment key, salt, user id) —
the first 64 bits of a SHA-256, read as a point in [0, 1) on the cumulative weights — so
every process agrees without a lookup. Once a thread has been exposed to a variant it
keeps it (an exposure row per run records it), even if the definition changes later.
Each process keeps the list of running experiments for ``REFRESH_SECONDS``, so a run on an
assistant with no experiment costs no extra query.
"""

from __future__ import annotations

import hashlib
import math
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text, UniqueConstraint, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from parley.assistants import Assistant, Assistants
from parley.errors import ApiError, not_found
from parley.events import PROVIDER_FALLBACK
from parley.providers.base import ProviderError
from parley.providers.registry import Providers, UnknownProvider
from parley.store.db import Database, Direct
from parley.store.schema import Base, Event, Run, Thread, from_row, now

log = structlog.get_logger(__name__)

KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
VARIANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$"
Status = Literal["draft", "running", "stopped"]


class Experiment(Base):
    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("running_assistant", name="uq_experiments_running_assistant"),)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    assistant: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="draft")
    #: The assistant while running, else NULL: unique, so one running experiment per assistant.
    running_assistant: Mapped[str | None] = mapped_column(String(100), default=None)
    control: Mapped[str] = mapped_column(String(40))
    salt: Mapped[str] = mapped_column(String(100), default="")
    variants: Mapped[list[Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(20), default="api")
    created_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    stopped_at: Mapped[float | None] = mapped_column(Float, default=None)


class Exposure(Base):
    """A run that was served a variant. Kept when the thread is deleted, so the split stays whole."""

    __tablename__ = "experiment_exposures"
    __table_args__ = (Index("ix_exposures_experiment_thread", "experiment_key", "thread_id"),)
    run_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    experiment_key: Mapped[str] = mapped_column(ForeignKey("experiments.key", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    thread_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[float] = mapped_column(Float, default=now)


# Runs hit by a provider fallback are set apart in results. Fallback events are rare: this
# partial index finds them without reading every event of an experiment's runs.
Index(
    "ix_run_events_fallback",
    Event.run_id,
    sqlite_where=Event.type == PROVIDER_FALLBACK,
    postgresql_where=Event.type == PROVIDER_FALLBACK,
)


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=VARIANT_PATTERN, description="Unique within the experiment.")
    weight: float = Field(default=1.0, gt=0, le=1_000_000, description="Relative share of users.")
    instructions: str | None = Field(
        default=None, max_length=20_000, description="Replaces the system prompt."
    )
    model: str | None = Field(
        default=None,
        min_length=3,
        max_length=500,
        description="Replaces the model route (provider:model,...).",
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)

    @field_validator("model")
    @classmethod
    def _route_shape(cls, value: str | None) -> str | None:
        if value is not None:
            parts = [p.strip() for p in value.split(",")]
            if not all(kind and model for kind, _, model in (p.partition(":") for p in parts)):
                raise ValueError("a model route is provider:model, comma-separated for a fallback chain")
        return value

    def sampling(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("temperature", self.temperature), ("max_tokens", self.max_tokens))
            if v is not None
        }

    def apply(self, assistant: Assistant) -> Assistant:
        """The assistant as this variant serves it."""
        return replace(
            assistant,
            instructions=assistant.instructions if self.instructions is None else self.instructions,
            model=self.model or assistant.model,
            options={**assistant.options, **self.sampling()},
        )


class ExperimentSpec(BaseModel):
    """An experiment's definition: the admin API's body and a config file's ``[experiments.KEY]``."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=KEY_PATTERN, description="Lowercase letters, digits, '.', '_' and '-'.")
    assistant: str = Field(default="general", min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)
    variants: list[VariantSpec] = Field(min_length=2, max_length=20)
    control: str | None = Field(
        default=None, description="The variant the others are compared with; the first by default."
    )
    salt: str = Field(
        default="", max_length=100, description="Change it to reshuffle who gets which variant."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if self.control is None:
            self.control = names[0]
        elif self.control not in names:
            raise ValueError(f"control {self.control!r} is not one of the variants {names}")
        return self


def bucket(key: str, salt: str, user_id: int | str) -> float:
    """The user's point in [0, 1) for an experiment: stable across processes, platforms and restarts."""
    digest = hashlib.sha256(f"{key}\x1f{salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose(variants: Sequence[VariantSpec], key: str, salt: str, user_id: int | str) -> VariantSpec:
    point = bucket(key, salt, user_id) * sum(v.weight for v in variants)
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.weight
        if point < cumulative:
            return variant
    return variants[-1]  # only reachable through float rounding at the very top


def variants_of(experiment: Experiment) -> list[VariantSpec]:
    return [VariantSpec.model_validate(v) for v in experiment.variants]


def load_config(path: Path | None) -> list[tuple[ExperimentSpec, Status]]:
    """``[experiments.KEY]`` tables of the config file, each with the status it starts in."""
    if path is None:
        return []
    raw = tomllib.loads(path.read_text()).get("experiments", {})
    found: list[tuple[ExperimentSpec, Status]] = []
    for key, table in raw.items():
        values = dict(table)
        status = values.pop("status", "running")
        if status not in ("draft", "running"):
            raise ValueError(f"{path}: experiment {key!r}: status must be 'draft' or 'running'")
        try:
            spec = ExperimentSpec.model_validate({**values, "key": key})
        except ValidationError as exc:
            raise ValueError(f"{path}: experiment {key!r} is invalid: {exc}") from None
        found.append((spec, status))
    return found


#: How long a process trusts its list of running experiments. A start or stop through this
#: process applies at once; other processes see it within this many seconds.
REFRESH_SECONDS = 2.0
# Read inside a run's creating transaction (``Database.direct``): built once.
_RUNNING = select(Experiment).where(Experiment.running_assistant.is_not(None))
_STICKY = (
    select(Exposure.variant)
    .where(Exposure.experiment_key == bindparam("key"), Exposure.thread_id == bindparam("thread_id"))
    .limit(1)
)


@dataclass(frozen=True, slots=True)
class Running:
    """What assignment needs of a running experiment."""

    key: str
    salt: str
    variants: list[VariantSpec]
    names: frozenset[str]

    @classmethod
    def of(cls, experiment: Experiment) -> Running:
        variants = variants_of(experiment)
        return cls(experiment.key, experiment.salt, variants, frozenset(v.name for v in variants))


class Experiments:
    def __init__(
        self,
        db: Database,
        assistants: Assistants,
        providers: Providers,
        config: Sequence[tuple[ExperimentSpec, Status]] = (),
    ) -> None:
        self._db = db
        self._assistants = assistants
        self._providers = providers
        self._config = list(config)
        self._running: dict[str, Running] = {}
        self._refreshed = -math.inf
        for spec, _ in self._config:
            if spec.assistant not in assistants:
                raise ValueError(
                    f"experiment {spec.key!r} targets assistant {spec.assistant!r}, which does not exist"
                )

    # -- definitions -------------------------------------------------------------

    async def sync_config(self) -> None:
        """Write the config file's experiments: new ones are inserted (running unless
        ``status = "draft"``); known ones get the file's definition and keep their status."""
        for spec, status in self._config:
            async with self._db.transaction() as session:
                current = await session.get(Experiment, spec.key, with_for_update=True)
                if current is not None and current.source != "config":
                    raise ValueError(
                        f"experiment {spec.key!r} is defined in the config file and was also created "
                        "through the API; rename one of them"
                    )
                if current is None:
                    session.add(_row(spec, source="config"))
                else:
                    _define(current, spec)
            self._forget()
            if current is None and status == "running":
                try:
                    await self.start(spec.key)
                except ApiError as exc:
                    log.warning("experiment_not_started", key=spec.key, reason=exc.message)

    async def create(self, spec: ExperimentSpec, *, start: bool = False) -> Experiment:
        if spec.assistant not in self._assistants:
            raise ApiError(422, "unknown_assistant", f"assistant {spec.assistant!r} does not exist")
        for variant in spec.variants:
            if variant.model is not None:
                try:
                    self._providers.route(variant.model)
                except (UnknownProvider, ProviderError, ValueError) as exc:
                    raise ApiError(
                        422, "invalid_model", f"variant {variant.name!r}: {getattr(exc, 'message', exc)}"
                    ) from None
        try:
            async with self._db.transaction() as session:
                if await session.get(Experiment, spec.key) is not None:
                    raise ApiError(409, "experiment_exists", f"experiment {spec.key!r} already exists")
                experiment = _row(spec, source="api")
                session.add(experiment)
        except IntegrityError:
            raise ApiError(409, "experiment_exists", f"experiment {spec.key!r} already exists") from None
        log.info("experiment_created", key=spec.key, assistant=spec.assistant)
        return await self.start(spec.key) if start else experiment

    async def get(self, key: str) -> Experiment:
        async with self._db.session() as session:
            experiment = await session.get(Experiment, key)
        if experiment is None:
            raise not_found("experiment", key)
        return experiment

    async def list(self) -> list[Experiment]:
        async with self._db.session() as session:
            return list((await session.scalars(select(Experiment).order_by(Experiment.created_at))).all())

    async def model_routes(self) -> set[str]:
        """The model routes running experiments' variants use (to build them ahead of the first run)."""
        async with self._db.session() as session:
            rows = (
                await session.scalars(select(Experiment).where(Experiment.running_assistant.is_not(None)))
            ).all()
        return {v.model for e in rows for v in variants_of(e) if v.model}

    async def start(self, key: str) -> Experiment:
        """Start (or restart) an experiment; starting a running one changes nothing."""
        try:
            async with self._db.transaction() as session:
                experiment = await session.get(Experiment, key, with_for_update=True)
                if experiment is None:
                    raise not_found("experiment", key)
                if experiment.status == "running":
                    return experiment
                other = await session.scalar(
                    select(Experiment.key).where(Experiment.running_assistant == experiment.assistant)
                )
                if other is not None:
                    raise _busy(experiment.assistant, other)
                experiment.status = "running"
                experiment.running_assistant = experiment.assistant
                experiment.started_at = now()
                experiment.stopped_at = None
        except IntegrityError:
            # A concurrent start for the same assistant won (the unique running_assistant).
            raise ApiError(
                409,
                "experiment_running",
                "another experiment was started for this assistant at the same time",
            ) from None
        self._forget()
        log.info("experiment_started", key=key)
        return experiment

    async def stop(self, key: str) -> Experiment:
        """Stop exposing users; results stay readable. Idempotent."""
        async with self._db.transaction() as session:
            experiment = await session.get(Experiment, key, with_for_update=True)
            if experiment is None:
                raise not_found("experiment", key)
            if experiment.status == "running":
                experiment.status = "stopped"
                experiment.running_assistant = None
                experiment.stopped_at = now()
                log.info("experiment_stopped", key=key)
        self._forget()
        return experiment

    # -- assignment (hooks of run creation and execution) ---------------------------

    async def assign(self, tx: Direct, run: Run, thread: Thread) -> Exposure | None:
        """Inside the run's creating transaction: pick the thread owner's variant; the exposure
        to record (the transaction inserts it with the run)."""
        experiment = await self._running_for(tx, thread.assistant)
        if experiment is None:
            return None
        found = await tx.first(_STICKY, {"key": experiment.key, "thread_id": thread.id})
        sticky = found[0] if found else None
        name = (
            sticky
            if sticky in experiment.names
            else choose(experiment.variants, experiment.key, experiment.salt, thread.user_id).name
        )
        run.variant = name
        return Exposure(
            run_id=run.id,
            experiment_key=experiment.key,
            variant=name,
            user_id=thread.user_id,
            thread_id=thread.id,
            created_at=now(),
        )

    async def _running_for(self, tx: Direct, assistant: str) -> Running | None:
        if time.monotonic() - self._refreshed > REFRESH_SECONDS:
            rows = [from_row(Experiment, row) for row in await tx.rows(_RUNNING, {})]
            self._running = {e.assistant: Running.of(e) for e in rows}
            self._refreshed = time.monotonic()
        return self._running.get(assistant)

    def _forget(self) -> None:
        self._refreshed = -math.inf

    async def apply(self, run: Run, assistant: Assistant) -> Assistant:
        """The assistant as the run's variant serves it (the run was exposed when it was created)."""
        async with self._db.session() as session:
            row = (
                await session.execute(
                    select(Exposure.variant, Experiment.variants)
                    .join(Experiment, Experiment.key == Exposure.experiment_key)
                    .where(Exposure.run_id == run.id)
                )
            ).first()
        if row is None:
            return assistant
        name, definitions = row
        for definition in definitions:
            if definition["name"] == name:
                return VariantSpec.model_validate(definition).apply(assistant)
        return assistant


def _row(spec: ExperimentSpec, *, source: str) -> Experiment:
    experiment = Experiment(key=spec.key, status="draft", source=source, created_at=now())
    _define(experiment, spec)
    return experiment


def _define(experiment: Experiment, spec: ExperimentSpec) -> None:
    experiment.assistant = spec.assistant
    experiment.description = spec.description
    experiment.control = spec.control or spec.variants[0].name
    experiment.salt = spec.salt
    experiment.variants = [v.model_dump() for v in spec.variants]
    if experiment.status == "running":
        experiment.running_assistant = spec.assistant


def _busy(assistant: str, other: str) -> ApiError:
    return ApiError(
        409,
        "experiment_running",
        f"assistant {assistant!r} already has a running experiment ({other}); stop it first",
    )
