"""Fixtures of the service tests: a real uvicorn server on 127.0.0.1 and gated test envs."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, ClassVar

import gymnasium as gym
import pytest
import uvicorn

from agentrl.env import StepResult, TextEnv

GATES: dict[str, threading.Event] = {}
"""Events the Gate env waits on, by name (each test uses fresh names)."""
PASSED: Counter[str] = Counter()
"""How many Gate steps got through each gate (a timed-out wait does not count)."""


class Gate(TextEnv):
    """One step: waits for ``GATES[gate]`` (at most 20 s) when ``gate`` is given, then ends."""

    reward_weights: ClassVar[dict[str, float]] = {"passed": 1.0}

    def __init__(self, gate: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.gate = gate

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        return "Say anything."

    def _score(self, action: str) -> StepResult:
        if self.gate is not None and GATES.setdefault(self.gate, threading.Event()).wait(timeout=20):
            PASSED[self.gate] += 1
        return StepResult("Thanks.", {"passed": 1.0}, terminated=True)


class Boom(TextEnv):
    """Raises on its first step."""

    reward_weights: ClassVar[dict[str, float]] = {"r": 1.0}

    def _reset_task(self, options: dict[str, Any] | None) -> str:
        return "Say anything."

    def _score(self, action: str) -> StepResult:
        raise RuntimeError("env exploded on purpose")


for _id, _cls in {"service-test/Gate-v0": Gate, "service-test/Boom-v0": Boom}.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_cls, disable_env_checker=True)


class LiveServer:
    """A real uvicorn server for ``app`` on a free 127.0.0.1 port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="service-test-uvicorn", daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 15 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError("uvicorn did not stop within 15 s")


class Gates:
    """Test handle on the Gate envs: open a gate, count the steps that passed it."""

    def open(self, name: str) -> None:
        GATES.setdefault(name, threading.Event()).set()

    def passed(self, name: str) -> int:
        return PASSED[name]


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture
def live_server(tiny: tuple[Any, Any]) -> Iterator[Any]:
    """Factory: ``live_server(**create_app_kwargs) -> (LiveServer, backend)``, stopped after the
    test. The backend is an HFBackend on a private copy of the tiny model (weight updates never
    touch the session fixture)."""
    from agentrl.backends.hf import HFBackend
    from agentrl.service import create_app

    started: list[LiveServer] = []

    def make(**kw: Any) -> tuple[LiveServer, HFBackend]:
        model, tok = tiny
        backend = HFBackend(copy.deepcopy(model), tok, max_batch_size=16, batch_window_ms=1.0)
        server = LiveServer(create_app(backend, tok, **kw)).start()
        started.append(server)
        return server, backend

    yield make
    for gate in GATES.values():  # never leave an env thread waiting
        gate.set()
    for server in started:
        server.stop()
