"""Inference servers on loopback: run one as a child process, and talk to one over HTTP.

:class:`ServerProcess` starts a server command in its own process group, waits until its
readiness URL answers, and on exit stops exactly that process group (never anything it did not
start). Its log goes to a file; a failed start raises :class:`ServerError` with the log's tail.

:class:`HTTPServerClient` is the client side shared by the vLLM and SGLang backends: one
``httpx.AsyncClient`` per event loop (``collect`` runs each call in a fresh loop), bounded
connections, timeouts, retries on connection errors, and a gate that holds new requests back
while a weight update runs so that no generation straddles two weight versions.

:class:`CheckpointPusher`, :func:`save_untied` and :func:`untied_copy` turn what
``update_weights`` receives into a checkpoint folder with an explicit ``lm_head.weight`` (see
:mod:`agentrl.backends.vllm` for why servers must never reload tied embeddings on CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from agentrl.backends.base import BackendError

__all__ = [
    "CheckpointPusher",
    "HTTPServerClient",
    "ServerError",
    "ServerProcess",
    "free_port",
    "is_tied",
    "port_in_use",
    "save_untied",
    "untied_copy",
]


class ServerError(RuntimeError):
    """A server process failed to start or died; the message carries its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


class ServerProcess:
    """A server command run in its own process group, usable as a context manager.

    Args:
        argv: the command line.
        ready_url: a URL that answers 200 once the server can take requests.
        env: extra environment variables (added to this process's environment).
        startup_timeout: seconds to wait for ``ready_url``.
        log_path: where stdout and stderr go (default: a fresh temporary file).
        name: a label for messages.
        port: the port the server will listen on; :meth:`start` refuses a port already in use
            (its readiness URL would reach the other server).
    """

    def __init__(
        self,
        argv: Sequence[str],
        ready_url: str,
        *,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 300.0,
        log_path: str | Path | None = None,
        name: str = "server",
        port: int | None = None,
    ) -> None:
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be > 0 seconds, got {startup_timeout}")
        self.argv = [str(a) for a in argv]
        self.ready_url = ready_url
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.name = name
        self.port = port
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"agentrl-{name}-", suffix=".log")
            os.close(fd)
            log_path = tmp
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    def start(self) -> ServerProcess:
        """Start the command and block until ``ready_url`` answers (or raise ServerError)."""
        if self.proc is not None:
            raise ServerError(f"{self.name} already started (pid {self.proc.pid})")
        if self.port is not None and port_in_use(self.port):
            raise ServerError(f"{self.name}: port {self.port} is already in use on loopback; "
                              f"pick another port (or port=None for a free one)")
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, start_new_session=True,
            )
        # a server left running by a crashed test run would hold gigabytes: stop it with us
        weakref.finalize(self, _kill_group, self.proc)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, t0: float) -> None:
        assert self.proc is not None
        with httpx.Client(timeout=5.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise ServerError(f"{self.name} exited with code {self.proc.returncode} "
                                      f"before it was ready:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.ready_url).status_code == 200:
                        return
                if time.monotonic() - t0 > self.startup_timeout:
                    raise ServerError(f"{self.name} not ready at {self.ready_url} after "
                                      f"{self.startup_timeout:.0f} s:\n{self.log_tail()}")
                time.sleep(0.5)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(log {self.log_path} unreadable: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the process group this object started, then SIGKILL it after ``grace`` s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the group led by ``proc`` if it still runs (its pid is its group id)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


class _LoopState:
    """Per-event-loop client and update gate (asyncio objects cannot cross loops)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.cond = asyncio.Condition()
        self.inflight = 0
        self.updating = False


class HTTPServerClient:
    """Async JSON client for one server, shared by the HTTP backends.

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000"``.
        max_connections: concurrent HTTP connections (requests beyond wait for one).
        timeout: seconds for one request to be answered (generation included).
        connect_timeout: seconds to open a connection.
        retries: extra attempts after a connection error (with exponential backoff).
        backoff: seconds before the first retry.
    """

    def __init__(self, base_url: str, *, max_connections: int = 64, timeout: float = 600.0,
                 connect_timeout: float = 10.0, retries: int = 3, backoff: float = 0.5) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.base_url = base_url.rstrip("/")
        self.limits = httpx.Limits(max_connections=max_connections,
                                   max_keepalive_connections=max_connections)
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout, pool=None)
        self.retries = retries
        self.backoff = backoff
        self._states: dict[int, tuple[asyncio.AbstractEventLoop, _LoopState]] = {}

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        entry = self._states.get(id(loop))
        if entry is None or entry[0] is not loop:
            client = httpx.AsyncClient(base_url=self.base_url, limits=self.limits,
                                       timeout=self.timeout)
            entry = (loop, _LoopState(client))
            self._states = {k: v for k, v in self._states.items() if not v[0].is_closed()}
            self._states[id(loop)] = entry
        return entry[1]

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: Mapping[str, str] | None = None, timeout: float | None = None) -> Any:
        """Send one request; return its decoded JSON (``None`` for an empty body).

        Raises:
            BackendError: the server is unreachable after the retries, timed out, or answered
                with an error status (the message names the route and the server's reason).
        """
        client = self._state().client
        kw: dict[str, Any] = {"json": json, "params": params}
        if timeout is not None:
            kw["timeout"] = httpx.Timeout(timeout, connect=self.timeout.connect, pool=None)
        for attempt in range(self.retries + 1):
            try:
                resp = await client.request(method, path, **kw)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as e:
                if attempt == self.retries:
                    raise BackendError(f"{method} {self.base_url}{path}: server unreachable after "
                                       f"{self.retries + 1} attempts: {e!r}") from e
                await asyncio.sleep(self.backoff * 2**attempt)
            except httpx.TimeoutException as e:
                raise BackendError(f"{method} {self.base_url}{path}: timed out: {e!r}") from e
        if resp.status_code >= 400:
            raise BackendError(f"{method} {self.base_url}{path} answered {resp.status_code}: "
                               f"{resp.text[:2000]}")
        return resp.json() if resp.content else None

    @contextlib.asynccontextmanager
    async def generation(self) -> Any:
        """Hold a slot for one generation: waits while a weight update runs."""
        st = self._state()
        async with st.cond:
            await st.cond.wait_for(lambda: not st.updating)
            st.inflight += 1
        try:
            yield
        finally:
            async with st.cond:
                st.inflight -= 1
                st.cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> Any:
        """Run a weight update alone: new generations wait, running ones finish first."""
        st = self._state()
        async with st.cond:
            await st.cond.wait_for(lambda: not st.updating)
            st.updating = True
            try:
                await st.cond.wait_for(lambda: st.inflight == 0)
            except BaseException:
                st.updating = False
                st.cond.notify_all()
                raise
        try:
            yield
        finally:
            async with st.cond:
                st.updating = False
                st.cond.notify_all()

    async def healthy(self, path: str = "/health") -> bool:
        """True when ``path`` answers 200 within a few seconds."""
        try:
            resp = await self._state().client.get(path, timeout=5.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def aclose(self) -> None:
        """Close the client of the running loop and forget the others (their loops are gone)."""
        loop = asyncio.get_running_loop()
        states, self._states = self._states, {}
        for lp, st in states.values():
            if lp is loop:
                await st.client.aclose()



# ----------------------------------------------------------------------------- checkpoints

_WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pt")
_EMBED, _HEAD = "model.embed_tokens.weight", "lm_head.weight"


def _untie(state: Mapping[str, Any]) -> dict[str, Any]:
    """Contiguous CPU tensors with ``lm_head.weight`` as its own copy of the output layer."""
    out = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    if _HEAD not in out:
        if _EMBED not in out:
            raise KeyError(f"weights: neither {_HEAD!r} nor {_EMBED!r} found; "
                           f"expected a Llama-style state dict")
        out[_HEAD] = out[_EMBED]
    if _EMBED in out and (out[_HEAD].untyped_storage().data_ptr()
                          == out[_EMBED].untyped_storage().data_ptr()):
        out[_HEAD] = out[_HEAD].clone()
    return out


def save_untied(weights: Mapping[str, Any], out_dir: str | Path, config_dir: str | Path) -> Path:
    """Write ``weights`` (a state dict) as an untied checkpoint folder.

    The folder gets ``model.safetensors`` with an explicit ``lm_head.weight`` and the
    ``config.json`` of ``config_dir`` with ``tie_word_embeddings: false`` (plus its
    ``generation_config.json``), so vLLM, SGLang and transformers can all load it.

    Returns:
        ``out_dir``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(_untie(weights), str(out / "model.safetensors"), metadata={"format": "pt"})
    src = Path(config_dir)
    config = json.loads((src / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if (src / "generation_config.json").is_file() and src.resolve() != out.resolve():
        shutil.copy2(src / "generation_config.json", out / "generation_config.json")
    return out


def untied_copy(src_dir: str | Path, dst_dir: str | Path) -> Path:
    """Copy the Hugging Face folder ``src_dir`` to ``dst_dir`` with untied embeddings.

    Tokenizer and template files are copied as they are; the weights are rewritten with an
    explicit ``lm_head.weight`` and the config says ``tie_word_embeddings: false``. The copy is
    written next to ``dst_dir`` and renamed into place, so a half-written folder never exists.
    """
    from safetensors.torch import load_file

    src, dst = Path(src_dir), Path(dst_dir)
    files = sorted(src.glob("*.safetensors"))
    if not (src / "config.json").is_file() or not files:
        raise FileNotFoundError(f"src_dir: {src} needs a config.json and *.safetensors files")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    try:
        for f in src.iterdir():
            if f.is_file() and f.name != "config.json" and not any(f.match(p) for p in _WEIGHT_FILES):
                shutil.copy2(f, tmp / f.name)
        state: dict[str, Any] = {}
        for f in files:
            state.update(load_file(str(f)))
        save_untied(state, tmp, src)
        if dst.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def is_tied(folder: str | Path) -> bool:
    """True when the folder's ``config.json`` ties the output layer to the embeddings."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return bool(config.get("tie_word_embeddings", False))


class CheckpointPusher:
    """Turns what ``update_weights`` receives into an untied folder a server can load.

    Args:
        weights_dir: where state dicts are written (default: a temporary folder that
            :meth:`cleanup` removes). Only the newest pushed checkpoint is kept.
    """

    def __init__(self, weights_dir: str | Path | None = None) -> None:
        self._owned = weights_dir is None
        self.root = Path(weights_dir or tempfile.mkdtemp(prefix="agentrl-weights-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._written: list[Path] = []

    async def folder(self, weights: Any, config_dir: Path) -> Path:
        """An untied checkpoint folder for ``weights`` (a state dict or a folder path)."""
        if isinstance(weights, (str, Path)):
            src = Path(weights)
            if not (src / "config.json").is_file() or not any(src.glob("*.safetensors")):
                raise FileNotFoundError(f"weights: {src} needs a config.json and *.safetensors")
            if not is_tied(src):
                return src.resolve()
            dst = Path(tempfile.mkdtemp(prefix="push-", dir=self.root))
            await asyncio.to_thread(untied_copy, src, dst / "untied")
            out = dst / "untied"
        elif isinstance(weights, Mapping):
            dst = Path(tempfile.mkdtemp(prefix="push-", dir=self.root))
            out = await asyncio.to_thread(save_untied, weights, dst, config_dir)
        else:
            raise TypeError(f"weights must be a state dict or a folder path, "
                            f"got {type(weights).__name__}")
        self._written.append(dst)
        return out.resolve()

    def keep_only(self, folder: Path) -> None:
        """Delete every checkpoint this pusher wrote except the one holding ``folder``."""
        for dst in list(self._written):
            if not folder.is_relative_to(dst.resolve()):
                shutil.rmtree(dst, ignore_errors=True)
                self._written.remove(dst)

    def cleanup(self) -> None:
        """Delete what this pusher wrote (and its folder when it made it)."""
        for dst in self._written:
            shutil.rmtree(dst, ignore_errors=True)
        self._written = []
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)


class ServedBackend:
    """What the HTTP backends share: the served folder, health, close.

    A subclass sets ``http`` (:class:`HTTPServerClient`), ``server`` (a :class:`ServerProcess`
    it started, or None), ``checkpoints`` (:class:`CheckpointPusher`), ``model_dir`` (None until
    known) and implements :meth:`_reported_root`, where its server says which folder it serves.
    """

    http: HTTPServerClient
    server: ServerProcess | None
    checkpoints: CheckpointPusher
    model_dir: Path | None

    async def _reported_root(self) -> str | None:
        raise NotImplementedError

    async def _served_dir(self) -> Path:
        if self.model_dir is None:
            root = await self._reported_root()
            if not root or not (Path(root) / "config.json").is_file():
                from agentrl.backends.base import BackendError

                raise BackendError(f"model_dir: the served model {root!r} is not a local folder; "
                                   f"pass model_dir= (the folder the server serves)")
            self.model_dir = Path(root)
        return self.model_dir

    async def health(self) -> bool:
        """True when the server's ``/health`` answers 200."""
        return await self.http.healthy("/health")

    async def close(self) -> None:
        """Close the HTTP client, stop a server this backend started, drop pushed checkpoints."""
        await self.http.aclose()
        if self.server is not None:
            server, self.server = self.server, None
            await asyncio.to_thread(server.stop)
        self.checkpoints.cleanup()

