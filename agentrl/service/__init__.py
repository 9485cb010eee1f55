"""The HTTP rollout service (FastAPI under uvicorn) and its async client.

Server side (needs the ``service`` extra: fastapi, uvicorn)::

    from agentrl.service import serve
    serve("smollm2-135m-instruct", port=8000, max_turns=4)   # blocks; `agentrl serve` does this

Client side (needs only httpx)::

    from agentrl.service import RolloutClient
    async with RolloutClient("http://127.0.0.1:8000") as client:
        async for group in client.stream([{"env_id": "agentrl/GuessNumber-v0", "seed": 0}]):
            ...

Names are imported lazily so that the client works without FastAPI installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RolloutClient", "RolloutRequest", "RolloutServiceError", "ServiceBusyError",
           "WeightsRequest", "create_app", "serve"]

_WHERE = {
    "RolloutClient": "agentrl.service.client",
    "RolloutServiceError": "agentrl.service.client",
    "ServiceBusyError": "agentrl.service.client",
    "RolloutRequest": "agentrl.service.schemas",
    "WeightsRequest": "agentrl.service.schemas",
    "create_app": "agentrl.service.app",
    "serve": "agentrl.service.server",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'agentrl.service' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
