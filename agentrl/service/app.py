"""The rollout service: a FastAPI app around one backend and the async rollout manager.

Routes::

    GET  /health            backend health, weight version, request and rollout counters
    GET  /envs              registered environments (id, reward components, tools)
    POST /rollouts          NDJSON stream: one TrajectoryGroup per line as it completes, then
                            {"done": true, "stats": {...}, "weight_version": n}
    POST /rollouts/collect  the same groups as one JSON list, in task order
    POST /weights           {"path": folder, "version": n?} -> backend.update_weights

Each rollout request runs as its own asyncio task with its own :class:`RolloutManager` (its
config is the server default plus the request's overrides), so a client that disconnects or a
server that shuts down cancels exactly that request's episodes. At most
``max_concurrent_requests`` rollout requests run at once; the next one gets 429 at once instead
of queueing invisibly. One failing episode never fails a request: the engine marks it failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from agentrl.backends.base import BackendError, InferenceBackend
from agentrl.env import env_specs
from agentrl.rollout.config import RolloutConfig
from agentrl.rollout.manager import RolloutManager
from agentrl.service.schemas import RolloutRequest, WeightsRequest, check_tasks, merge_config
from agentrl.types import to_jsonable

__all__ = ["NDJSON", "create_app"]

NDJSON = "application/x-ndjson"
_TOTALS = ("groups", "trajectories", "failures", "generated_tokens", "turns")
log = logging.getLogger("agentrl.service")


@dataclass
class _End:
    """Last item of a run's queue; ``error`` is None on success."""

    error: str | None = None


@dataclass
class _State:
    """What the app shares between requests (all touched only from the event loop)."""

    backend: InferenceBackend
    tokenizer: Any
    default_config: RolloutConfig
    max_requests: int
    slots: threading.BoundedSemaphore  # non-blocking acquire: full means 429, never a queue
    runs: set[_Run] = field(default_factory=set)
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TOTALS, 0))
    requests: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "rejected": 0, "disconnected": 0}
    )

    def counters(self) -> dict[str, Any]:
        live = dict(self.totals)
        for run in self.runs:  # requests still running count what they finished so far
            for k in _TOTALS:
                live[k] += getattr(run.manager.stats, k)
        reqs = {**self.requests, "active": len(self.runs), "max_concurrent": self.max_requests}
        return {"requests": reqs, "rollouts": live}


class _Run:
    """One rollout request, run as its own task so a disconnect or shutdown can cancel it.

    ``work(manager, queue)`` puts results on ``queue``; the run always ends the queue with an
    :class:`_End`. The request's concurrency slot is released when the task is really over
    (its episodes cancelled or finished), not when the response is.
    """

    def __init__(self, state: _State, request: Request, config: RolloutConfig,
                 work: Callable[[RolloutManager, asyncio.Queue[Any]], Awaitable[None]]) -> None:
        self.state = state
        self.manager = RolloutManager(state.backend, state.tokenizer, config)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        state.runs.add(self)
        state.requests["total"] += 1
        self.task = asyncio.ensure_future(self._produce(work))
        self.task.add_done_callback(self._finished)
        self.watcher = asyncio.ensure_future(_wait_disconnect(request))
        self.watcher.add_done_callback(self._watched)

    async def _produce(self, work: Callable[..., Awaitable[None]]) -> None:
        error: str | None = "cancelled (client disconnected or server shutting down)"
        try:
            await work(self.manager, self.queue)
            error = None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # reported to the client; the server goes on
            log.exception("rollout request failed")
            error = f"{type(e).__name__}: {e}"
        finally:
            self._finished(None)  # free the slot before the client can see the end
            self.queue.put_nowait(_End(error))

    def summary(self, end: _End) -> dict[str, Any]:
        out: dict[str, Any] = {"done": True, "stats": self.manager.stats.as_dict(),
                               "weight_version": self.state.backend.weight_version}
        if end.error is not None:
            out["error"] = end.error
        return out

    def cancel(self) -> None:
        self.task.cancel()

    def _watched(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is None and not self.task.done():
            self.state.requests["disconnected"] += 1
            self.task.cancel()

    def _finished(self, _: asyncio.Future[None] | None) -> None:
        """Release the slot and add the counters, once (also when cancelled before starting)."""
        self.watcher.cancel()
        if self in self.state.runs:
            self.state.runs.discard(self)
            for k in _TOTALS:
                self.state.totals[k] += getattr(self.manager.stats, k)
            self.state.slots.release()


async def _wait_disconnect(request: Request) -> None:
    """Return when the client goes away (the body has been read, so only disconnect remains)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(
    backend: InferenceBackend,
    tokenizer: Any,
    *,
    default_config: RolloutConfig | None = None,
    max_concurrent_requests: int = 4,
    close_backend: bool = True,
) -> FastAPI:
    """Build the rollout service around ``backend``.

    Args:
        backend: any ``InferenceBackend`` (in-process HF, vLLM, SGLang, a fake).
        tokenizer: the policy's tokenizer (chat template, eos).
        default_config: rollout settings a request starts from (its ``config`` overrides them).
        max_concurrent_requests: rollout requests served at once; more get 429 "server busy".
        close_backend: close the backend when the app shuts down (lifespan).

    Returns:
        The FastAPI app; run it with uvicorn (see :func:`agentrl.service.serve`).
    """
    if max_concurrent_requests < 1:
        raise ValueError(f"max_concurrent_requests must be >= 1, got {max_concurrent_requests}")
    state = _State(backend, tokenizer, default_config or RolloutConfig(), max_concurrent_requests,
                   threading.BoundedSemaphore(max_concurrent_requests))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for run in list(state.runs):
            run.cancel()
        await asyncio.gather(*(r.task for r in list(state.runs)), return_exceptions=True)
        if close_backend:
            await backend.close()
            log.info("agentrl service: backend closed")

    app = FastAPI(title="agentrl rollout service", lifespan=lifespan)
    app.state.agentrl = state
    _add_info_routes(app, state)
    _add_rollout_routes(app, state)
    _add_weight_routes(app, state)
    return app


def _add_info_routes(app: FastAPI, state: _State) -> None:
    @app.get("/health")
    async def health() -> JSONResponse:
        try:
            ok, error = bool(await state.backend.health()), None
        except Exception as e:
            ok, error = False, f"{type(e).__name__}: {e}"
        body = {"status": "ok" if ok else "unhealthy", "healthy": ok,
                "weight_version": state.backend.weight_version, **state.counters()}
        if error:
            body["error"] = error
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/envs")
    async def envs() -> list[dict[str, Any]]:
        return [{"id": s.id, "description": s.description, "components": s.components,
                 "tools": list(s.tools), "entry_point": s.entry_point} for s in env_specs()]


def _start(state: _State, request: Request, body: RolloutRequest,
           work: Callable[[RolloutManager, asyncio.Queue[Any]], Awaitable[None]]) -> _Run:
    """Validate what pydantic could not, take a slot (or answer 429) and start the run."""
    errors: list[Any] = []
    try:
        config = merge_config(state.default_config, body.config)
    except RequestValidationError as e:
        errors += e.errors()
    try:
        check_tasks(body.tasks)
    except RequestValidationError as e:
        errors += e.errors()
    if errors:  # every problem of the request in one answer
        raise RequestValidationError(errors)
    if not state.slots.acquire(blocking=False):
        state.requests["rejected"] += 1
        raise HTTPException(
            status_code=429, headers={"Retry-After": "1"},
            detail=(f"server busy: {state.max_requests} rollout request(s) already running "
                    f"(max_concurrent_requests={state.max_requests}); retry later"))
    return _Run(state, request, config, work)


def _add_rollout_routes(app: FastAPI, state: _State) -> None:
    @app.post("/rollouts")
    async def rollouts(body: RolloutRequest, request: Request) -> StreamingResponse:
        async def work(manager: RolloutManager, queue: asyncio.Queue[Any]) -> None:
            async for group in manager.stream(body.tasks):
                queue.put_nowait(group)

        run = _start(state, request, body, work)

        async def lines() -> AsyncIterator[str]:
            try:
                while not isinstance(item := await run.queue.get(), _End):
                    yield item.model_dump_json() + "\n"
                yield json.dumps(run.summary(item)) + "\n"
            finally:
                run.cancel()  # a no-op when the run is over; else the client left mid-stream

        return StreamingResponse(lines(), media_type=NDJSON)

    @app.post("/rollouts/collect")
    async def collect(body: RolloutRequest, request: Request) -> JSONResponse:
        async def work(manager: RolloutManager, queue: asyncio.Queue[Any]) -> None:
            queue.put_nowait(await manager.run(body.tasks))

        run = _start(state, request, body, work)
        try:
            item = await run.queue.get()
        finally:
            run.cancel()
        if isinstance(item, _End):
            status = 503 if item.error and item.error.startswith("cancelled") else 500
            raise HTTPException(status_code=status, detail=f"rollout failed: {item.error}")
        return JSONResponse([to_jsonable(g) for g in item])


def _add_weight_routes(app: FastAPI, state: _State) -> None:
    @app.post("/weights")
    async def weights(body: WeightsRequest) -> dict[str, int]:
        path = Path(body.path).expanduser()
        if not path.is_dir():
            _bad_path(body.path, f"no such folder on the server: {body.path}")
        try:
            await state.backend.update_weights(str(path), body.version)
        except BackendError as e:
            raise HTTPException(status_code=503, detail=f"backend unavailable: {e}") from None
        except (FileNotFoundError, KeyError, ValueError, TypeError, RuntimeError) as e:
            _bad_path(body.path, e.args[0] if isinstance(e, KeyError) and e.args else str(e))
        return {"weight_version": state.backend.weight_version}


def _bad_path(value: str, msg: str) -> None:
    raise RequestValidationError(
        [{"loc": ("body", "path"), "msg": msg, "type": "value_error", "input": value}])
