"""``serve``: load a model into the in-process HF backend and run the rollout service."""

from __future__ import annotations

import inspect
from typing import Any

from agentrl.rollout.config import RolloutConfig

__all__ = ["SERVICE_OPTIONS", "serve"]

SERVICE_OPTIONS = ("max_concurrent_requests", "log_level", "timeout_graceful_shutdown")


def serve(
    model: str = "smollm2-135m-instruct",
    host: str = "127.0.0.1",
    port: int = 8000,
    **backend_options: Any,
) -> None:
    """Run the rollout service under uvicorn until interrupted (blocks; Ctrl+C stops it).

    Args:
        model: a name or folder for :func:`agentrl.models.load_model`.
        host: interface to bind; the default serves this machine only (the service has no
            authentication, and ``POST /weights`` reads folders on the server).
        port: TCP port.
        **backend_options: any :class:`RolloutConfig` field (the default config of every
            request, e.g. ``max_new_tokens=64``, ``max_turns=4``); ``max_concurrent_requests``
            (default 4), ``log_level`` (default ``"info"``), ``timeout_graceful_shutdown``
            (seconds to let running streams finish on shutdown, default 5); the rest go to
            :class:`agentrl.backends.hf.HFBackend` (``max_batch_size``, ``batch_window_ms``,
            ``prefix_cache_tokens``, ``seed``).

    Raises:
        TypeError: an option that none of the above accepts (the message lists the valid ones).
        pydantic.ValidationError: a config field with an invalid value.
    """
    import uvicorn

    from agentrl.backends.hf import HFBackend
    from agentrl.service.app import create_app

    opts = dict(backend_options)
    config = RolloutConfig(**{k: opts.pop(k) for k in list(opts) if k in RolloutConfig.model_fields})
    service = {k: opts.pop(k) for k in list(opts) if k in SERVICE_OPTIONS}
    hf_allowed = set(inspect.signature(HFBackend).parameters) - {"model", "tokenizer", "model_name"}
    unknown = sorted(set(opts) - hf_allowed)
    if unknown:
        valid = sorted(hf_allowed | set(RolloutConfig.model_fields) | set(SERVICE_OPTIONS))
        raise TypeError(f"serve: unknown option(s) {unknown}; valid: {valid}")
    backend = HFBackend(model_name=model, **opts)
    app = create_app(backend, backend.tokenizer, default_config=config,
                     max_concurrent_requests=service.get("max_concurrent_requests", 4))
    uvicorn.run(app, host=host, port=port, log_level=service.get("log_level", "info"),
                timeout_graceful_shutdown=service.get("timeout_graceful_shutdown", 5))
