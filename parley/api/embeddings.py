"""``POST /v1/embeddings``: the server's own embedding model (all-MiniLM-L6-v2, offline), as OpenAI
serves its embeddings. The model is the one knowledge search uses (``PARLEY_EMBEDDINGS``): its
id is listed by ``GET /v1/models``. Input is text (a string or a list of strings); token arrays
are refused, as they would be another model's tokens. Long texts are cut at the model's
256 word pieces (OpenAI refuses them instead); ``usage`` counts the pieces embedded.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from parley.api.deps import ParleyDep, PrincipalDep
from parley.errors import ApiError

if TYPE_CHECKING:
    from parley.app import Parley

router = APIRouter(tags=["openai"])

MAX_INPUTS = 2048
#: The embedding backends (``PARLEY_EMBEDDINGS``) and the model id each serves.
MODEL_IDS = {"minilm": "all-minilm-l6-v2", "minilm-torch": "all-minilm-l6-v2", "hash": "hash-256"}


class EmbeddingsCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[str] | list[int] | list[list[int]]
    model: str = Field(min_length=1, max_length=200)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)


def model_id(parley: Parley) -> str | None:
    """The embedding model this server serves, if any."""
    return MODEL_IDS.get(parley.settings.embeddings)


def model_json(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "parley", "kind": "embeddings"}


def _names(requested: str) -> str:
    return requested.lower().removeprefix("sentence-transformers/")


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingsCreate, parley: ParleyDep, _: PrincipalDep) -> dict[str, Any]:
    served = model_id(parley)
    if served is None or _names(body.model) != served:
        offered = (
            f"the embedding model is {served!r}" if served else "embeddings are off (PARLEY_EMBEDDINGS=none)"
        )
        raise ApiError(404, "model_not_found", f"model {body.model!r} does not exist here: {offered}")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(
            422, "invalid_request", "input must be a non-empty string or a list of strings (no token arrays)"
        )
    if len(texts) > MAX_INPUTS:
        raise ApiError(422, "invalid_request", f"{len(texts)} inputs; the limit is {MAX_INPUTS}")
    strings = [str(t) for t in texts]
    if any(not t for t in strings):
        raise ApiError(422, "invalid_request", "an input is empty")
    size = sum(len(t) for t in strings)
    if size > parley.settings.max_input_chars * 8:
        raise ApiError(413, "input_too_large", f"the input holds {size} characters")
    embedder = await parley.knowledge.embedder()
    if embedder is None:
        raise ApiError(
            503, "embeddings_unavailable", "the embedding model could not be loaded; see the server log"
        )
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise ApiError(
            422,
            "invalid_request",
            f"{served} has {embedder.dim} dimensions; it cannot make {body.dimensions}",
        )
    vectors, tokens = await asyncio.to_thread(
        lambda: (embedder.embed(strings), embedder.count_tokens(strings))
    )
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(vector, body.encoding_format)}
        for i, vector in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": served,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: Any, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return [float(x) for x in vector]
