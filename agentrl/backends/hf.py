"""In-process Hugging Face transformers backend with continuous batching on one worker thread.

Requests from many concurrent episodes go into a queue. A single worker thread owns the model
and runs a custom decode loop: it admits waiting requests (after a short batching window when
it was idle), prefills them together with left padding and explicit position ids, merges them
into the running batch's KV cache, and then decodes every active row one token per forward
pass. Finished rows leave the batch at once, so short replies never wait for long ones, and new
requests join between two steps. Each row has its own temperature, top-p, seed, stop strings
and token budget.

Logprobs are the raw (temperature 1, no top-p) ``log_softmax`` of the logits at the sampled
token: exactly what the trainer's forward pass over the same ids computes, up to float error.

Prefix caching: the KV of every finished sequence is kept (bounded, LRU). A new prompt that
starts with a cached sequence (the next turn of the same episode, a sibling in a tree) only
prefills the new tokens. The cache is cleared whenever the weights change; in-place changes to
a shared model are detected through the parameters' version counters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import inspect
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentrl.backends.base import BackendError, Generation, SamplingParams
from agentrl.rollout import kv as kvops
from agentrl.rollout.sampling import sample_batch

__all__ = ["HFBackend"]

_MIN_SHARED = 16  # prefill a prefix shared by new prompts once when it saves this many tokens


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    future: cf.Future[Generation]


@dataclass
class _Row:
    """One sequence in the running batch."""

    req: _Request
    generator: torch.Generator | None
    pos: int  # position id of ``last`` (its KV is not cached yet)
    last: int = -1
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None


@dataclass
class _WeightJob:
    weights: Any
    version: int | None
    future: cf.Future[int]


class HFBackend:
    """Transformers model on CPU (or one GPU) behind the ``InferenceBackend`` protocol.

    Args:
        model: a loaded causal LM (shared, not copied: pass the trainer's model to generate with
            its current weights; then push updates with ``update_weights(None, version)`` or let
            the version-counter check invalidate the prefix cache).
        tokenizer: its tokenizer (needed for stop strings and eos ids).
        model_name: instead of ``model``/``tokenizer``: a name or folder for
            :func:`agentrl.models.load_model`.
        max_batch_size: most rows decoded together.
        batch_window_ms: when idle, wait this long after the first request for more to join.
        prefix_cache_tokens: token budget of the prefix cache (0 disables it).
        seed: seed of the sampler for requests that carry no seed of their own.
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        model_name: str | None = None,
        max_batch_size: int = 32,
        batch_window_ms: float = 5.0,
        prefix_cache_tokens: int = 32768,
        seed: int = 0,
    ) -> None:
        if model is None:
            from agentrl.models import load_model

            model, tokenizer = load_model(model_name or "smollm2-135m-instruct")
        elif model_name is not None:
            raise ValueError("model_name: give either model (+ tokenizer) or model_name, not both")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if batch_window_ms < 0 or prefix_cache_tokens < 0:
            raise ValueError("batch_window_ms and prefix_cache_tokens must be >= 0")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_ms / 1000.0
        self.weight_version = 0
        self.lock = threading.RLock()  # held during every forward pass and weight copy
        self.stats = {"forward_passes": 0, "prefill_tokens": 0, "decode_tokens": 0, "requests": 0}
        self._eos = _eos_ids(model, tokenizer)
        self._max_pos = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._device = next(model.parameters()).device
        self._prefix = kvops.PrefixCache(prefix_cache_tokens) if prefix_cache_tokens else None
        self._fingerprint = self._weights_fingerprint()
        self._sampler = torch.Generator().manual_seed(seed)
        self._queue: queue.SimpleQueue[_Request | _WeightJob | None] = queue.SimpleQueue()
        self._pending: list[_Request | _WeightJob] = []
        self._rows: list[_Row] = []
        self._batch = kvops.BatchCache(max_batch_size)
        self._layers = int(model.config.get_text_config().num_hidden_layers)
        self._closed = False
        self._submit_lock = threading.Lock()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="agentrl-hf-backend", daemon=True)
        self._thread.start()

    # ---- protocol -------------------------------------------------------------------------
    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        """Queue one request and wait for its tokens; cancelling the await drops the row."""
        return await asyncio.wrap_future(self.submit(prompt_ids, params))

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> cf.Future[Generation]:
        """Thread-safe, loop-free variant of :meth:`generate` returning a concurrent future."""
        if self._closed:
            raise BackendError("HFBackend is closed")
        if not prompt_ids:
            raise ValueError("prompt_ids: must contain at least one token id")
        if len(prompt_ids) >= self._max_pos:
            raise ValueError(f"prompt_ids: {len(prompt_ids)} tokens exceed the model's {self._max_pos} positions")
        fut: cf.Future[Generation] = cf.Future()
        with self._submit_lock:  # never enqueue after the worker drained the queue for good
            if self._closed:
                raise BackendError("HFBackend is closed")
            self._queue.put(_Request(list(prompt_ids), params, fut))
        return fut

    async def update_weights(self, weights: Any, version: int | None = None) -> None:
        """Copy ``weights`` (a state dict, a folder with safetensors, or ``None`` when the shared
        model was already changed in place) into the model once the running rows finish;
        requests that arrive meanwhile wait, so no sequence mixes two weight versions."""
        fut: cf.Future[int] = cf.Future()
        with self._submit_lock:
            if self._closed:
                raise BackendError("HFBackend is closed")
            self._queue.put(_WeightJob(weights, version, fut))
        await asyncio.wrap_future(fut)

    async def health(self) -> bool:
        return self._thread.is_alive() and not self._closed and self._error is None

    async def close(self) -> None:
        """Stop the worker; requests still waiting fail with ``BackendError``."""
        with self._submit_lock:
            self._closed = True
            self._queue.put(None)
        await asyncio.to_thread(self._thread.join, 30)

    def prefix_cache_stats(self) -> dict[str, int]:
        p = self._prefix
        if p is None:
            return {}
        return {"entries": len(p), "tokens": p.tokens, "hits": p.hits, "hit_tokens": p.hit_tokens, "lookups": p.lookups}

    # ---- worker thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while not self._closed:
                    self._take(block=not self._rows)
                    self._apply_weight_job_if_idle()
                    reqs = self._admissible()
                    if reqs:
                        self._prefill(reqs)
                    if self._rows:
                        self._decode_step()
        except BaseException as e:  # fail every waiter rather than hang them
            self._error = e
        self._fail_all(self._error or BackendError("HFBackend closed"))

    def _take(self, block: bool) -> None:
        """Move queued items into ``_pending`` (when idle: wait for one, then a short window)."""
        if block and not self._pending:
            self._put(self._queue.get())
            deadline = time.monotonic() + self.batch_window_s
            while not self._closed and len(self._pending) < self.max_batch_size:
                left = deadline - time.monotonic()
                try:
                    self._put(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
        while not self._closed:
            try:
                self._put(self._queue.get_nowait())
            except queue.Empty:
                return

    def _put(self, item: _Request | _WeightJob | None) -> None:
        if item is None:
            self._closed = True
        else:
            self._pending.append(item)

    def _admissible(self) -> list[_Request]:
        """Pending requests that may join now (none while a weight update waits)."""
        if any(isinstance(p, _WeightJob) for p in self._pending):
            return []
        room = self.max_batch_size - len(self._rows)
        take = [p for p in self._pending if isinstance(p, _Request)][:room]
        self._pending = self._pending[len(take) :]
        return [r for r in take if not r.future.cancelled()]

    def _apply_weight_job_if_idle(self) -> None:
        if self._rows or not self._pending or not isinstance(self._pending[0], _WeightJob):
            return
        job = self._pending.pop(0)
        assert isinstance(job, _WeightJob)
        try:
            with self.lock:
                if job.weights is not None:
                    _copy_weights(self.model, job.weights)
                self.weight_version = job.version if job.version is not None else self.weight_version + 1
            self._invalidate()
            _resolve(job.future, self.weight_version)
        except Exception as e:
            _resolve(job.future, e)

    def _invalidate(self) -> None:
        if self._prefix is not None:
            self._prefix.clear()
        self._fingerprint = self._weights_fingerprint()

    def _weights_fingerprint(self) -> int:
        return sum(p._version for p in self.model.parameters())

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                 state: kvops.KVState | None) -> tuple[torch.Tensor, kvops.KVState]:
        """One model call; returns last-position logits ``(B, V)`` and the grown cache."""
        cache = kvops.make_cache(state, self._layers, headroom=0)
        with self.lock:
            out = self.model(
                input_ids=ids.to(self._device),  # (B, T)
                attention_mask=mask.to(self._device),  # (B, S + T)
                position_ids=pos.to(self._device),  # (B, T)
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kw: cache},
            )
        self.stats["forward_passes"] += 1
        return out.logits[:, -1, :].float().cpu(), kvops.cache_state(cache, mask)

    def _run_prompts(self, prompts: list[list[int]]) -> tuple[torch.Tensor, kvops.KVState]:
        """Prefill prompts after their longest cached prefixes, left-padded into one batch."""
        hits = [self._prefix.lookup(p) if self._prefix is not None else (0, None) for p in prompts]
        cached = [n for n, _ in hits]
        suffix = [p[n:] for p, n in zip(prompts, cached, strict=True)]
        s = max(len(x) for x in suffix)
        ids = torch.full((len(prompts), s), self._eos[0], dtype=torch.long)  # (n, S)
        pos = torch.zeros(len(prompts), s, dtype=torch.long)  # (n, S)
        smask = torch.zeros(len(prompts), s, dtype=torch.long)  # (n, S)
        for i, (x, n) in enumerate(zip(suffix, cached, strict=True)):
            ids[i, s - len(x) :] = torch.tensor(x)
            pos[i, s - len(x) :] = torch.arange(n, n + len(x))
            smask[i, s - len(x) :] = 1
        past = kvops.stack_prefixes([kv for _, kv in hits], cached, headroom=s) if max(cached) else None
        mask = torch.cat([past.mask, smask], dim=1) if past is not None else smask  # (n, C + S)
        self.stats["prefill_tokens"] += sum(len(x) for x in suffix)
        return self._forward(ids, mask, pos, past)

    def _warm_shared_prefixes(self, reqs: list[_Request]) -> None:
        """Prefill once the long prefixes that several new prompts share (e.g. G siblings)."""
        if self._prefix is None or len(reqs) < 2:
            return
        prompts = [np.asarray(r.prompt_ids) for r in reqs]
        shared: set[tuple[int, ...]] = set()
        for i, p in enumerate(prompts):
            best = max(_lcp(p, q) for j, q in enumerate(prompts) if j != i)
            best = min(best, len(p) - 1)
            if best - self._prefix.peek(reqs[i].prompt_ids) >= _MIN_SHARED:
                shared.add(tuple(reqs[i].prompt_ids[:best]))
        if not shared:
            return
        warm = sorted(list(x) for x in shared)
        _, state = self._run_prompts(warm)
        for i, tokens in enumerate(warm):
            self._prefix.insert(tokens, kvops.row_kv(state, i))

    def _prefill(self, reqs: list[_Request]) -> None:
        """Run new prompts and merge them into the running batch."""
        if self._prefix is not None and self._weights_fingerprint() != self._fingerprint:
            self._invalidate()  # the shared model changed in place: cached KV is stale
        self._warm_shared_prefixes(reqs)
        logits, state = self._run_prompts([r.prompt_ids for r in reqs])
        self.stats["requests"] += len(reqs)
        rows = [_Row(r, self._row_generator(r.params), len(r.prompt_ids)) for r in reqs]
        self._batch.add(state)
        self._rows.extend(rows)
        self._sample_and_retire(logits, rows, offset=len(self._rows) - len(rows))

    def _decode_step(self) -> None:
        rows, batch = self._rows, self._batch
        ids = torch.tensor([[r.last] for r in rows], dtype=torch.long)  # (B, 1)
        pos = torch.tensor([[r.pos] for r in rows], dtype=torch.long)  # (B, 1)
        batch.reserve(batch.length + 1)  # the step writes one column in place
        mask = torch.cat([batch.mask, batch.mask.new_ones(len(rows), 1)], dim=1)  # (B, S + 1)
        logits, _ = self._forward(ids, mask, pos, batch.view())
        batch.append_column()
        for r in rows:
            r.pos += 1
        self.stats["decode_tokens"] += len(rows)
        self._sample_and_retire(logits, rows, offset=0)

    def _row_generator(self, params: SamplingParams) -> torch.Generator | None:
        if params.temperature == 0:
            return None
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,), generator=self._sampler))
        return torch.Generator().manual_seed(seed)

    def _sample_and_retire(self, logits: torch.Tensor, rows: list[_Row], offset: int) -> None:
        """Sample one token per row of ``logits``, record it, and drop rows that finished."""
        ps = [r.req.params for r in rows]
        tokens = sample_batch(logits, [p.temperature for p in ps], [p.top_p for p in ps],
                              [r.generator for r in rows])  # (B,)
        logp = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)  # (B,)
        for r, tok, lp in zip(rows, tokens.tolist(), logp.tolist(), strict=True):
            r.generated.append(tok)
            r.logprobs.append(lp)
            r.last = tok
            r.finish = self._finish_reason(r)
        done = [offset + i for i, r in enumerate(rows) if r.finish or r.req.future.cancelled()]
        if done:
            self._retire(done)

    def _finish_reason(self, r: _Row) -> str | None:
        p = r.req.params
        if r.last in self._eos:
            return "stop"
        if p.stop and self.tokenizer is not None:
            tail = self.tokenizer.decode(r.generated[-(max(map(len, p.stop)) + 4) :])
            if any(s in tail for s in p.stop):
                return "stop"
        if len(r.generated) >= p.max_new_tokens or r.pos + 1 >= self._max_pos:
            return "length"
        return None

    def _retire(self, done: list[int]) -> None:
        state = self._batch.view()
        for i in done:
            r = self._rows[i]
            if r.finish is None:  # cancelled by the caller: drop silently
                continue
            if self._prefix is not None:
                self._prefix.insert(r.req.prompt_ids + r.generated[:-1], kvops.row_kv(state, i))
            gen = Generation(token_ids=r.generated, logprobs=r.logprobs, finish_reason=r.finish,  # type: ignore[arg-type]
                             weight_version=self.weight_version)
            _resolve(r.req.future, gen)
        order = self._batch.remove(done)
        self._rows = [self._rows[i] for i in order]

    def _fail_all(self, error: BaseException) -> None:
        err = error if isinstance(error, BackendError) else BackendError(f"HF backend worker died: {error!r}")
        with self._submit_lock:
            self._closed = True
            while True:
                try:
                    self._put(self._queue.get_nowait())
                except queue.Empty:
                    break
        for w in [r.req for r in self._rows] + self._pending:
            _resolve(w.future, err)
        self._rows, self._pending = [], []


def _resolve(fut: cf.Future[Any], value: Any) -> None:
    """Set a result or exception unless the waiter already cancelled."""
    try:
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)
    except cf.InvalidStateError:  # the waiter cancelled meanwhile
        return


def _lcp(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for x in [gen_eos, getattr(tokenizer, "eos_token_id", None), getattr(model.config, "eos_token_id", None)]:
        for i in x if isinstance(x, (list, tuple)) else [x]:
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    if not ids:
        raise ValueError("tokenizer/model: no eos_token_id found; the decoder cannot tell when to stop")
    return ids


def _copy_weights(model: Any, weights: Any) -> None:
    """Copy a state dict (or the safetensors files of a folder) into ``model`` in place."""
    if isinstance(weights, (str, Path)):
        from safetensors.torch import load_file

        files = sorted(Path(weights).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"weights: no *.safetensors file in {weights}")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        weights = state
    if not isinstance(weights, dict):
        raise TypeError(f"weights must be a state dict, a folder path or None, got {type(weights).__name__}")
    params = model.state_dict(keep_vars=True)  # tied weights appear under every name
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise KeyError(f"weights: unknown parameter name(s) {unknown[:5]}; expected names like {next(iter(params))!r}")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
