"""``RolloutClient``: the async Python client of the rollout service (httpx only, no FastAPI).

Example::

    async with RolloutClient("http://127.0.0.1:8000") as client:
        tasks = [{"env_id": "agentrl/GuessNumber-v0", "seed": s, "group_size": 4} for s in range(8)]
        async for group in client.stream(tasks, max_turns=4, temperature=1.0):
            ...                                   # TrajectoryGroup, in completion order
        print(client.last_stats)                  # the server's summary of that request
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from agentrl.rollout.config import RolloutTask
from agentrl.types import TrajectoryGroup, to_jsonable

__all__ = ["RolloutClient", "RolloutServiceError", "ServiceBusyError"]


class RolloutServiceError(RuntimeError):
    """The service refused a request or a rollout failed on the server.

    Attributes:
        status: the HTTP status (None when the error came in the stream's summary line).
        detail: the server's ``detail`` (a message, or FastAPI's list of field errors).
    """

    def __init__(self, message: str, status: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.detail = status, detail


class ServiceBusyError(RolloutServiceError):
    """429: the server already runs its maximum of rollout requests; retry later."""


class RolloutClient:
    """Async client of the rollout service.

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000"``.
        timeout: seconds to wait for the next bytes of a response (None: no limit; a group
            can take minutes on CPU).
        connect_timeout: seconds to wait for the connection.
        transport: an httpx transport (tests: ``httpx.ASGITransport(app)``).
    """

    def __init__(self, base_url: str, *, timeout: float | None = None, connect_timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport,
                                       timeout=httpx.Timeout(timeout, connect=connect_timeout))
        self.last_stats: dict[str, Any] | None = None
        self.last_weight_version: int | None = None

    async def __aenter__(self) -> RolloutClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def stream(self, tasks: Iterable[RolloutTask | dict[str, Any]],
                     **config: Any) -> AsyncIterator[TrajectoryGroup]:
        """Yield each task's group as soon as the server finishes it.

        Args:
            tasks: :class:`RolloutTask` objects or dicts with the same fields.
            **config: overrides of the server's default ``RolloutConfig`` fields.

        Raises:
            ServiceBusyError: 429, the server is at its request limit.
            RolloutServiceError: any other 4xx/5xx (message names the bad field), a rollout
                that failed on the server, or a stream cut before its summary line.

        Leaving the loop early (``break``, or closing the generator) closes the connection,
        which cancels the request's remaining episodes on the server. Wrap the call in
        ``contextlib.aclosing`` to close it at once rather than when it is garbage collected.
        """
        summary: dict[str, Any] | None = None
        async with self._http.stream("POST", "/rollouts", json=_body(tasks, config)) as resp:
            await _raise_for_status(resp)
            lines = resp.aiter_lines()
            while summary is None:
                try:
                    line = await anext(lines)
                except StopAsyncIteration:
                    break
                except httpx.HTTPError as e:  # e.g. the server stopped mid-stream
                    raise RolloutServiceError(f"rollout stream broke: {type(e).__name__}: {e}") from e
                item = json.loads(line) if line.strip() else None
                if item is not None and item.get("done") is True:
                    summary = item
                elif item is not None:
                    yield TrajectoryGroup.model_validate(item)
        if summary is None:
            raise RolloutServiceError("rollout stream ended before its summary line (server gone?)")
        self.last_stats, self.last_weight_version = summary.get("stats"), summary.get("weight_version")
        if summary.get("error"):
            raise RolloutServiceError(f"rollout failed on the server: {summary['error']}",
                                      detail=summary["error"])

    async def collect(self, tasks: Iterable[RolloutTask | dict[str, Any]],
                      **config: Any) -> list[TrajectoryGroup]:
        """All groups in task order, in one response (same arguments and errors as ``stream``)."""
        resp = await self._http.post("/rollouts/collect", json=_body(tasks, config))
        await _raise_for_status(resp)
        return [TrajectoryGroup.model_validate(g) for g in resp.json()]

    async def health(self) -> dict[str, Any]:
        """The server's health report (``healthy`` is False when the backend is down)."""
        resp = await self._http.get("/health")
        if resp.status_code not in (200, 503):
            await _raise_for_status(resp)
        return resp.json()

    async def envs(self) -> list[dict[str, Any]]:
        """Registered environments: id, description, reward components, tools."""
        resp = await self._http.get("/envs")
        await _raise_for_status(resp)
        return resp.json()

    async def update_weights(self, path: str, version: int | None = None) -> int:
        """Load the ``*.safetensors`` files of ``path`` (a folder on the server); return the
        new weight version."""
        resp = await self._http.post("/weights", json={"path": str(path), "version": version})
        await _raise_for_status(resp)
        return int(resp.json()["weight_version"])


def _body(tasks: Iterable[RolloutTask | dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    if isinstance(tasks, (RolloutTask, dict)):
        raise TypeError("tasks must be a list of RolloutTask or dicts, not a single task")
    items = [to_jsonable(t) if isinstance(t, RolloutTask) else t for t in tasks]
    return {"tasks": items, "config": config}


async def _raise_for_status(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    await resp.aread()
    try:
        detail = resp.json().get("detail")
    except ValueError:
        detail = resp.text
    cls = ServiceBusyError if resp.status_code == 429 else RolloutServiceError
    raise cls(f"{resp.status_code} from {resp.request.url.path}: {_describe(detail)}",
              status=resp.status_code, detail=detail)


def _describe(detail: Any) -> str:
    """FastAPI's field errors as 'body.config.max_new_tokens: Input should be ...; ...'."""
    if isinstance(detail, list):
        parts = []
        for err in detail:
            if isinstance(err, dict):
                loc = ".".join(str(p) for p in err.get("loc", ()))
                parts.append(f"{loc}: {err.get('msg', '')}")
            else:
                parts.append(str(err))
        return "; ".join(parts)
    return str(detail)
