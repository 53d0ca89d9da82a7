"""Request dependencies: the app's objects and the calling principal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from parley.users import Principal

if TYPE_CHECKING:
    from parley.app import Parley


async def get_parley(request: Request) -> Parley:
    # async: FastAPI runs a plain function dependency in its thread pool (a hand-off per request).
    return _parley(request)


async def get_principal(request: Request) -> Principal:
    return await _parley(request).authenticate(request)


def _parley(request: Request) -> Parley:
    parley: Parley = request.app.state.parley
    return parley


ParleyDep = Annotated["Parley", Depends(get_parley)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
