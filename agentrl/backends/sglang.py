"""SGLang backend: a real SGLang server (GPU), token ids in, token ids + logprobs out.

Generation uses SGLang's native ``POST /generate`` with ``input_ids``, ``sampling_params`` and
``return_logprob: true``; the answer's ``meta_info.output_token_logprobs`` holds
``[logprob, token_id, text]`` per generated token and ``meta_info.finish_reason.type`` says why
it stopped. SGLang computes logprobs *after* temperature scaling unless the server runs with
``SGLANG_RETURN_ORIGINAL_LOGPROB=1`` (``RETURN_ORIGINAL_LOGPROB=1`` in older releases);
:class:`SGLangServer` sets both so that logprobs follow :mod:`agentrl.backends.base`. At
temperature 1 the two agree. Weights are updated in place with ``POST /update_weights_from_disk``
from an untied checkpoint folder (as for vLLM; harmless for a tied served model).

SGLang has no pip-only CPU install, so its tests are marked ``gpu``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentrl.backends.base import BackendError, Generation, SamplingParams
from agentrl.backends.server import (
    CheckpointPusher,
    HTTPServerClient,
    ServedBackend,
    ServerProcess,
    free_port,
)

__all__ = ["SGLangBackend", "SGLangServer", "sglang_python"]


def sglang_python() -> Path:
    """``$AGENTRL_SGLANG_PYTHON`` when set, else this interpreter (SGLang installed alongside)."""
    return Path(os.environ.get("AGENTRL_SGLANG_PYTHON") or sys.executable)


class SGLangServer(ServerProcess):
    """A real SGLang server on loopback; a context manager.

    Args:
        model_dir: the Hugging Face folder to serve.
        port: the TCP port (default: a free one).
        python: the interpreter with ``sglang`` installed (default: :func:`sglang_python`).
        host: the address to bind (loopback).
        mem_fraction: ``--mem-fraction-static``, the share of GPU memory SGLang reserves.
        startup_timeout: seconds to wait for ``/health``.
        extra_args: more ``sglang.launch_server`` flags.
        log_path: the server log (default: a temporary file).
    """

    def __init__(self, model_dir: str | Path, port: int | None = None, *,
                 python: str | Path | None = None, host: str = "127.0.0.1",
                 mem_fraction: float = 0.5, startup_timeout: float = 600.0,
                 extra_args: Sequence[str] = (), log_path: str | Path | None = None) -> None:
        if not 0 < mem_fraction <= 1:
            raise ValueError(f"mem_fraction must be in (0, 1], got {mem_fraction}")
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"model_dir: no config.json in {self.model_dir}")
        port = port or free_port(host)
        self.url = f"http://{host}:{port}"
        argv = [str(python or sglang_python()), "-m", "sglang.launch_server",
                "--model-path", str(self.model_dir), "--host", host, "--port", str(port),
                "--mem-fraction-static", str(mem_fraction), *extra_args]
        env = {"SGLANG_RETURN_ORIGINAL_LOGPROB": "1", "RETURN_ORIGINAL_LOGPROB": "1",
               "HF_HUB_OFFLINE": "1"}
        super().__init__(argv, f"{self.url}/health", env=env, startup_timeout=startup_timeout,
                         log_path=log_path, name="sglang", port=port)


class SGLangBackend(ServedBackend):
    """``InferenceBackend`` over SGLang's native HTTP API.

    Args:
        base_url: the server (``"http://127.0.0.1:30000"``). ``None`` starts an
            :class:`SGLangServer` on ``model_dir`` that :meth:`close` stops.
        model_dir: the folder the server serves (default: the embedded model's folder when a
            server is started). Gives the config of pushed checkpoints; when omitted, it is read
            from the server's ``/get_model_info``.
        server_options: keyword arguments of :class:`SGLangServer` for a started server.
        max_connections: concurrent HTTP requests (the server batches them).
        timeout: seconds one request may take.
        retries: extra attempts after connection errors.
        weights_dir: where pushed checkpoints are written (default: a temporary folder).
    """

    def __init__(self, base_url: str | None = None, *, model_dir: str | Path | None = None,
                 server_options: Mapping[str, Any] | None = None, max_connections: int = 64,
                 timeout: float = 600.0, retries: int = 3,
                 weights_dir: str | Path | None = None) -> None:
        self.server: SGLangServer | None = None
        if base_url is None:
            if model_dir is None:
                from agentrl.models import embedded_model_dir

                model_dir = embedded_model_dir()
            self.server = SGLangServer(model_dir, **dict(server_options or {})).start()
            base_url = self.server.url
        elif server_options:
            raise TypeError("server_options only apply when base_url is None (a started server)")
        self.http = HTTPServerClient(base_url, max_connections=max_connections, timeout=timeout,
                                     retries=retries)
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.weight_version = 0
        self.checkpoints = CheckpointPusher(weights_dir)

    @property
    def base_url(self) -> str:
        """The server's URL."""
        return self.http.base_url

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Sample one continuation of ``prompt_ids`` with ``POST /generate``."""
        if not prompt_ids or not all(isinstance(t, int) and t >= 0 for t in prompt_ids):
            raise ValueError("prompt_ids must be a non-empty list of non-negative token ids")
        sampling: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens, "temperature": params.temperature,
            "top_p": params.top_p, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0,
            "frequency_penalty": 0.0, "presence_penalty": 0.0, "stop": list(params.stop),
            "no_stop_trim": True, "skip_special_tokens": False,
        }
        if params.seed is not None:
            sampling["sampling_seed"] = params.seed
        payload = {"input_ids": prompt_ids, "sampling_params": sampling, "return_logprob": True,
                   "logprob_start_len": -1}
        async with self.http.generation():
            version = self.weight_version
            body = await self.http.request("POST", "/generate", json=payload)
        return parse_generate(body, version)

    async def update_weights(self, weights: Any, version: int | None = None) -> None:
        """Load new weights with ``POST /update_weights_from_disk``; bump :attr:`weight_version`.

        Args:
            weights: a state dict (written as an untied checkpoint) or a checkpoint folder.
            version: the new version (default: the current one plus one).

        Raises:
            BackendError: the server could not load the checkpoint (its message included).
        """
        folder = await self.checkpoints.folder(weights, await self._served_dir())
        new_version = self.weight_version + 1 if version is None else int(version)
        async with self.http.exclusive():
            body = await self.http.request("POST", "/update_weights_from_disk", json={
                "model_path": str(folder), "weight_version": str(new_version),
                "abort_all_requests": False})
            if not (isinstance(body, dict) and body.get("success")):
                raise BackendError(f"/update_weights_from_disk failed for {folder}: {body}")
            self.weight_version = new_version
        self.checkpoints.keep_only(folder)

    async def _reported_root(self) -> str | None:
        info = await self.http.request("GET", "/get_model_info")
        return info.get("model_path") if isinstance(info, dict) else None


def parse_generate(body: Any, version: int) -> Generation:
    """A ``Generation`` from a native ``/generate`` answer (one prompt), checking its ids."""
    try:
        meta = body["meta_info"]
        pairs = [(float(lp), int(tok)) for lp, tok, *_ in meta["output_token_logprobs"]]
        reason = (meta.get("finish_reason") or {}).get("type")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BackendError(f"/generate answer lacks meta_info.output_token_logprobs: {e!r}; "
                           f"got {str(body)[:500]}") from e
    ids = [tok for _, tok in pairs]
    if "output_ids" in body and list(body["output_ids"]) != ids:
        raise BackendError(f"/generate: output_ids {body['output_ids'][:8]}... disagree with the "
                           f"logprob tokens {ids[:8]}...")
    if reason not in ("stop", "length", "abort"):
        raise BackendError(f"/generate: unexpected finish_reason {reason!r}; "
                           f"expected 'stop', 'length' or 'abort'")
    return Generation(token_ids=ids, logprobs=[lp for lp, _ in pairs], finish_reason=reason,
                      weight_version=version)
