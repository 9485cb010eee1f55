"""Key/value-cache bookkeeping for the in-process batched decoder (``agentrl.backends.hf``).

The decoder keeps one KV cache for all active rows: per layer a key and a value tensor of shape
``(B, H, S, D)`` plus a 0/1 column mask ``(B, S)``. Rotary position embeddings are applied to
keys *before* they are cached and every row carries explicit position ids, so the order of
cache columns does not matter to attention, only the mask does. That makes every operation
here simple tensor surgery: left-pad to a common length, concatenate rows, drop finished rows,
drop columns no row uses.

:class:`PrefixCache` keeps the KV of finished sequences (prompt + generated tokens) so that the
next turn of a multi-turn episode, or a sibling in a branching tree, only prefills the tokens
after the longest cached common prefix (what vLLM calls automatic prefix caching).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each (B, H, S, D)
RowKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each (H, L, D)


@dataclass
class KVState:
    """The running batch's cache: per-layer buffers ``(B, H, capacity, D)`` of which the first
    ``length`` columns are used, and the column mask ``(B, length)`` (1 = a real token).

    Buffers may keep spare columns so that a forward pass writes in place instead of
    re-allocating and copying the whole cache (what ``DynamicCache`` does at every step).
    """

    layers: KV
    mask: torch.Tensor  # (B, L)

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


def _alloc(like: torch.Tensor, rows: int, cols: int, zero: bool = True) -> torch.Tensor:
    """A ``(rows, H, cols, D)`` buffer; ``zero=False`` only where every read column is written."""
    h, d = like.shape[-3], like.shape[-1]
    return like.new_zeros(rows, h, cols, d) if zero else like.new_empty(rows, h, cols, d)


class BatchCache:
    """The running batch's KV in one preallocated buffer per layer, ``(max_rows, H, C, D)``.

    Rows ``[0, rows)`` are in use; columns ``[0, length)`` are in use, with ``mask`` ``(rows,
    length)`` saying which hold a row's tokens. Because keys carry their rotary positions and
    every row has explicit position ids, a row's columns need not be aligned with anyone
    else's: a new row is copied into columns ``[0, l)`` of a free row slot (no shifting of the
    others), a finished row is replaced by the last row (one row copied), and decoding writes
    the new column in place. Columns nobody uses any more are compacted away now and then.
    The buffer starts zeroed and only ever receives finite values, so masked columns are safe.
    """

    def __init__(self, max_rows: int, headroom: int = 256) -> None:
        self.max_rows, self.headroom = max_rows, headroom
        self.layers: KV = []
        self.mask = torch.zeros(0, 0, dtype=torch.long)

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def view(self) -> KVState:
        """The rows in use (views into the buffers: writes go to the buffers)."""
        return KVState([(k[: self.rows], v[: self.rows]) for k, v in self.layers], self.mask)

    def reserve(self, cols: int, like: KV | None = None) -> None:
        """Make room for ``cols`` columns (allocating or growing the buffers)."""
        cap = self.layers[0][0].shape[2] if self.layers else 0
        if cols <= cap:
            return
        src = self.layers or like
        assert src, "reserve: no layer shapes known yet"
        new = [(_alloc(k, self.max_rows, cols + self.headroom), _alloc(v, self.max_rows, cols + self.headroom))
               for k, v in src]
        for (nk, nv), (k, v) in zip(new, self.layers, strict=False):
            nk[:, :, : self.length] = k[:, :, : self.length]
            nv[:, :, : self.length] = v[:, :, : self.length]
        self.layers = new

    def add(self, new: KVState) -> None:
        """Copy new rows (e.g. a prefill's cache) into free row slots."""
        n, b, width = self.rows, new.rows, new.length
        if n + b > self.max_rows:
            raise ValueError(f"BatchCache: {n} + {b} rows exceed max_rows={self.max_rows}")
        length = max(self.length, width)
        self.reserve(length + 1, like=new.layers)
        for (k, v), (nk, nv) in zip(self.layers, new.layers, strict=True):
            k[n : n + b, :, :width] = nk[:, :, :width]
            v[n : n + b, :, :width] = nv[:, :, :width]
        mask = torch.zeros(n + b, length, dtype=torch.long)
        mask[:n, : self.length] = self.mask
        mask[n:, :width] = new.mask
        self.mask = mask

    def append_column(self) -> None:
        """Mark the column a decode step just wrote (every row gets one more token)."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.rows, 1)], dim=1)

    def remove(self, done: list[int]) -> list[int]:
        """Drop rows ``done``; return, for each remaining slot, the old index of its row."""
        order = list(range(self.rows))
        mask = self.mask.clone()
        for i in sorted(done, reverse=True):
            last = len(order) - 1
            if i != last:
                for k, v in self.layers:
                    k[i] = k[last]
                    v[i] = v[last]
                mask[i] = mask[last]
                order[i] = order[last]
            order.pop()
        self.mask = mask[: len(order)]
        self._compact()
        return order

    def _compact(self) -> None:
        """Drop columns no row uses once they are a quarter of the length (and at least 64)."""
        used = self.mask.any(dim=0)  # (L,)
        dead = self.length - int(used.sum())
        if dead < max(64, self.length // 4):
            return
        cols = used.nonzero().squeeze(1)
        n, m = self.rows, int(cols.numel())
        for k, v in self.layers:
            k[:n, :, :m] = k[:n, :, cols]
            v[:n, :, :m] = v[:n, :, cols]
        self.mask = self.mask[:, cols]


def row_kv(state: KVState, row: int) -> RowKV:
    """One row's cached columns in order, as contiguous copies ``(H, L, D)``."""
    cols = state.mask[row].nonzero().squeeze(1)  # (L,)
    return [(k[row][:, cols].contiguous(), v[row][:, cols].contiguous()) for k, v in state.layers]


def stack_prefixes(parts: list[RowKV | None], lengths: list[int], headroom: int) -> KVState:
    """Right-align cached prefixes of different lengths into one left-padded batch.

    Args:
        parts: per row, the cached KV (``None`` when nothing is cached).
        lengths: per row, how many cached columns to use (a prefix of the stored ones).
        headroom: spare columns to allocate for the tokens that follow.
    """
    n, c = len(parts), max(lengths)
    like = next(p for p in parts if p is not None)
    mask = torch.zeros(n, c, dtype=torch.long)
    out: KV = []
    for layer, (k0, _) in enumerate(like):
        keys, values = _alloc(k0, n, c + headroom, False), _alloc(k0, n, c + headroom, False)  # (n, H, C+h, D)
        for i, (part, m) in enumerate(zip(parts, lengths, strict=True)):
            keys[i, :, : c - m] = 0.0  # masked padding must hold finite values
            values[i, :, : c - m] = 0.0
            if part is not None and m > 0:
                keys[i, :, c - m : c] = part[layer][0][:, :m]
                values[i, :, c - m : c] = part[layer][1][:, :m]
        out.append((keys, values))
    for i, m in enumerate(lengths):
        if m > 0:
            mask[i, c - m :] = 1
    return KVState(out, mask)


class BufferLayer(DynamicLayer):
    """A ``DynamicLayer`` that appends into spare buffer columns instead of concatenating."""

    def __init__(self, keys: torch.Tensor | None, values: torch.Tensor | None, length: int, headroom: int) -> None:
        super().__init__()
        self.kbuf, self.vbuf, self.length, self.headroom = keys, values, length, headroom
        if keys is not None and values is not None:
            self.is_initialized, self.device = True, keys.device
            self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        n = key_states.shape[-2]
        if self.kbuf is None or self.vbuf is None or self.length + n > self.kbuf.shape[2]:
            self._grow(key_states, value_states, n)
        assert self.kbuf is not None and self.vbuf is not None
        self.kbuf[:, :, self.length : self.length + n] = key_states
        self.vbuf[:, :, self.length : self.length + n] = value_states
        self.length += n
        self.is_initialized, self.device = True, self.kbuf.device
        self.keys, self.values = self.kbuf[:, :, : self.length], self.vbuf[:, :, : self.length]
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, n: int) -> None:
        cap = self.length + n + max(self.headroom, self.length // 2)
        rows = key_states.shape[0]  # columns past ``length`` are written before they are read
        k, v = _alloc(key_states, rows, cap, False), _alloc(value_states, rows, cap, False)
        if self.kbuf is not None and self.vbuf is not None and self.length:
            k[:, :, : self.length] = self.kbuf[:, :, : self.length]
            v[:, :, : self.length] = self.vbuf[:, :, : self.length]
        self.kbuf, self.vbuf = k, v

    def get_seq_length(self) -> int:
        return self.length


def make_cache(state: KVState | None, num_layers: int, headroom: int) -> DynamicCache:
    """A ``DynamicCache`` whose layers write into ``state``'s buffers (or new ones)."""
    cache = DynamicCache()
    if state is None:
        cache.layers = [BufferLayer(None, None, 0, headroom) for _ in range(num_layers)]
    else:
        cache.layers = [BufferLayer(k, v, state.length, headroom) for k, v in state.layers]
    return cache


def cache_state(cache: DynamicCache, mask: torch.Tensor) -> KVState:
    """The buffers of a cache built by :func:`make_cache`, after a forward pass."""
    return KVState([(layer.kbuf, layer.vbuf) for layer in cache.layers], mask)


@dataclass
class _Entry:
    tokens: np.ndarray  # (L,) token ids whose KV is stored
    kv: RowKV


class PrefixCache:
    """LRU store of finished sequences' KV, bounded by a total token count.

    ``lookup(prompt)`` returns the longest common prefix between ``prompt`` and any stored
    sequence (always leaving at least one prompt token to run, so the model yields logits).
    Entries must be cleared whenever the weights change: their keys and values were computed
    with the old weights.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next = 0
        self.tokens = 0
        self.hits = 0
        self.hit_tokens = 0
        self.lookups = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.tokens = 0

    def peek(self, prompt: list[int]) -> int:
        """How many leading prompt tokens :meth:`lookup` would find (no statistics, no LRU)."""
        return self._best(prompt)[1]

    def lookup(self, prompt: list[int]) -> tuple[int, RowKV | None]:
        """``(n, kv)``: the first ``n`` prompt tokens are cached in ``kv`` (``n`` may be 0)."""
        self.lookups += 1
        best_key, best = self._best(prompt)
        if best == 0:
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.hit_tokens += best
        return best, self._entries[best_key].kv

    def _best(self, prompt: list[int]) -> tuple[int, int]:
        if not self._entries or len(prompt) < 2:
            return -1, 0
        p = np.asarray(prompt, dtype=np.int64)
        best_key, best = -1, 0
        for key, entry in self._entries.items():
            m = min(len(entry.tokens), len(p) - 1)
            if m <= best:
                continue
            diff = np.flatnonzero(entry.tokens[:m] != p[:m])
            lcp = int(diff[0]) if diff.size else m
            if lcp > best:
                best_key, best = key, lcp
        return best_key, best

    def insert(self, tokens: list[int], kv: RowKV) -> None:
        """Store ``kv`` for ``tokens`` (dropping stored prefixes of it and old entries)."""
        length = len(tokens)
        if length == 0 or length > self.max_tokens:
            return
        t = np.asarray(tokens, dtype=np.int64)
        for key in [k for k, e in self._entries.items() if len(e.tokens) <= length]:
            e = self._entries[key]
            if np.array_equal(e.tokens, t[: len(e.tokens)]):  # superseded by the longer one
                self.tokens -= len(e.tokens)
                del self._entries[key]
        while self._entries and self.tokens + length > self.max_tokens:
            _, old = self._entries.popitem(last=False)
            self.tokens -= len(old.tokens)
        self._entries[self._next] = _Entry(t, kv)
        self._next += 1
        self.tokens += length
