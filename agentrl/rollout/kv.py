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

import numpy as np
import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each (B, H, S, D)
RowKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each (H, L, D)


def pad_left(kv: KV, mask: torch.Tensor, n: int) -> tuple[KV, torch.Tensor]:
    """Prepend ``n`` empty (masked) columns."""
    if n <= 0:
        return kv, mask
    out = []
    for k, v in kv:
        b, h, _, d = k.shape
        z = k.new_zeros(b, h, n, d)  # (B, H, n, D)
        out.append((torch.cat([z, k], dim=2), torch.cat([z, v], dim=2)))
    return out, torch.cat([mask.new_zeros(mask.shape[0], n), mask], dim=1)


def concat_rows(
    a: KV | None, a_mask: torch.Tensor | None, b: KV, b_mask: torch.Tensor
) -> tuple[KV, torch.Tensor]:
    """Stack two batches of rows, left-padding the shorter one."""
    if a is None or a_mask is None or a_mask.shape[0] == 0:
        return b, b_mask
    sa, sb = a_mask.shape[1], b_mask.shape[1]
    a, a_mask = pad_left(a, a_mask, sb - sa)
    b, b_mask = pad_left(b, b_mask, sa - sb)
    kv = [(torch.cat([ka, kb]), torch.cat([va, vb])) for (ka, va), (kb, vb) in zip(a, b, strict=True)]
    return kv, torch.cat([a_mask, b_mask])


def select_rows(kv: KV, mask: torch.Tensor, keep: list[int]) -> tuple[KV, torch.Tensor]:
    """Keep rows ``keep`` (in that order) and drop columns that no remaining row uses."""
    idx = torch.tensor(keep, dtype=torch.long)
    mask = mask.index_select(0, idx)  # (B', S)
    cols = mask.any(dim=0).nonzero().squeeze(1)  # (S',)
    if cols.numel() == mask.shape[1]:
        return [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in kv], mask
    kv = [(k[idx][:, :, cols], v[idx][:, :, cols]) for k, v in kv]
    return kv, mask[:, cols]


def row_kv(kv: KV, mask: torch.Tensor, row: int) -> RowKV:
    """One row's cached columns in order, as contiguous copies ``(H, L, D)``."""
    cols = mask[row].nonzero().squeeze(1)  # (L,)
    return [(k[row][:, cols].contiguous(), v[row][:, cols].contiguous()) for k, v in kv]


def stack_prefixes(parts: list[RowKV | None], lengths: list[int], like: KV) -> tuple[KV, torch.Tensor]:
    """Right-align cached prefixes of different lengths into one left-padded batch.

    Args:
        parts: per row, the cached KV (``None`` or length 0 for no cached prefix).
        lengths: per row, how many cached columns to use (a prefix of the stored ones).
        like: any KV of the same model (for shapes and dtype).
    """
    n, c = len(parts), max(lengths)
    mask = torch.zeros(n, c, dtype=torch.long)
    out: KV = []
    for layer, (k0, _) in enumerate(like):
        h, d = k0.shape[-3], k0.shape[-1]
        keys = k0.new_zeros(n, h, c, d)  # (n, H, C, D)
        values = k0.new_zeros(n, h, c, d)
        for i, (part, m) in enumerate(zip(parts, lengths, strict=True)):
            if part is not None and m > 0:
                keys[i, :, c - m :] = part[layer][0][:, :m]
                values[i, :, c - m :] = part[layer][1][:, :m]
        out.append((keys, values))
    for i, m in enumerate(lengths):
        mask[i, c - m :] = 1 if m > 0 else 0
    return out, mask


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

    def lookup(self, prompt: list[int]) -> tuple[int, RowKV | None]:
        """``(n, kv)``: the first ``n`` prompt tokens are cached in ``kv`` (``n`` may be 0)."""
        self.lookups += 1
        if not self._entries or len(prompt) < 2:
            return 0, None
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
        if best == 0:
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.hit_tokens += best
        return best, self._entries[best_key].kv

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
