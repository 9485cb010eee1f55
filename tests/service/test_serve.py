"""``serve`` for real: a subprocess runs uvicorn with the tiny model; SIGINT stops it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from agentrl.service import RolloutClient

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {proc.stdout.read().decode()}")
        try:
            resp = httpx.get(f"{url}/health", timeout=2)
            if resp.status_code == 200:
                return resp.json()
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"serve did not answer /health within {timeout} s")


@pytest.mark.slow  # a fresh interpreter imports torch and loads the model (~10 s on a busy CPU)
def test_serve_subprocess_streams_and_stops_on_sigint():
    port = _free_port()
    code = ("from agentrl.service import serve; "
            f"serve('tiny-random', port={port}, log_level='warning', max_turns=1, max_new_tokens=8, "
            "max_batch_size=4, max_concurrent_requests=2)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        health = _wait_healthy(url, proc)

        async def main() -> list:
            async with RolloutClient(url, timeout=30) as client:
                return [g async for g in client.stream([{"env_id": "agentrl/GuessNumber-v0", "group_size": 2}])]

        groups = asyncio.run(asyncio.wait_for(main(), 60))
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert health["healthy"] is True and health["requests"]["max_concurrent"] == 2
    assert len(groups) == 1 and len(groups[0]) == 2
    assert all(len(t.turns) == 1 and len(t.turns[0].token_ids) <= 8 for t in groups[0])  # serve's defaults
    assert rc == 0, proc.stdout.read().decode()
