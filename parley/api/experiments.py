"""Experiments (admin): define, start, stop, and read per-variant results."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field, StrictBool

from parley.api.deps import ParleyDep, PrincipalDep
from parley.api.schemas import iso
from parley.errors import ApiError
from parley.experiments import Experiment, ExperimentSpec, variants_of
from parley.results import experiment_results
from parley.users import Principal

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])


class ExperimentCreate(ExperimentSpec):
    start: StrictBool = Field(default=False, description="Start exposing users at once.")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "experiments are managed and read by administrators")


def experiment_json(experiment: Experiment) -> dict[str, Any]:
    return {
        "object": "experiment",
        "key": experiment.key,
        "assistant": experiment.assistant,
        "description": experiment.description,
        "status": experiment.status,
        "control": experiment.control,
        "salt": experiment.salt,
        "source": experiment.source,
        "variants": [v.model_dump() for v in variants_of(experiment)],
        "created_at": iso(experiment.created_at),
        "started_at": iso(experiment.started_at),
        "stopped_at": iso(experiment.stopped_at),
    }


@router.get("")
async def list_(parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    require_admin(principal)
    return {"object": "list", "data": [experiment_json(e) for e in await parley.experiments.list()]}


@router.post("", status_code=201)
async def create(body: ExperimentCreate, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    require_admin(principal)
    spec = ExperimentSpec.model_validate(body.model_dump(exclude={"start"}))
    return experiment_json(await parley.experiments.create(spec, start=body.start))


@router.get("/{key}")
async def read(key: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    require_admin(principal)
    return experiment_json(await parley.experiments.get(key))


@router.post("/{key}/start")
async def start(key: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    require_admin(principal)
    return experiment_json(await parley.experiments.start(key))


@router.post("/{key}/stop")
async def stop(key: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    require_admin(principal)
    return experiment_json(await parley.experiments.stop(key))


@router.get("/{key}/results")
async def results(key: str, parley: ParleyDep, principal: PrincipalDep) -> dict[str, Any]:
    require_admin(principal)
    return await experiment_results(parley.db, await parley.experiments.get(key))
