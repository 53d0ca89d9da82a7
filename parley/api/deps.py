"""Request dependencies: the app's objects and the calling principal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from parley.users import Principal

if TYPE_CHECKING:
    from parley.app import Parley


def get_parley(request: Request) -> Parley:
    parley: Parley = request.app.state.parley
    return parley


async def get_principal(request: Request) -> Principal:
    parley = get_parley(request)
    return await parley.authenticate(request)


ParleyDep = Annotated["Parley", Depends(get_parley)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
