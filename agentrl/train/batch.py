"""From trajectories to tensors, and from tensors to per-token log-probabilities.

Position convention: a sequence of ``L`` token ids gives ``T = L - 1`` prediction slots; slot
``t`` scores ``token_ids[t + 1]`` from the prefix ``token_ids[: t + 1]``. All per-token tensors
(logp, mask, rollout logprobs, advantages) are ``(B, T)`` in this convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agentrl.types import Trajectory


@dataclass
class Batch:
    """Right-padded tensors for a list of trajectories."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    mask: torch.Tensor  # (B, T) float, 1 where the predicted token was model-generated
    rollout_logp: torch.Tensor  # (B, T) backend logprobs at the predicted tokens (0 elsewhere)
    advantages: torch.Tensor  # (B,) or (B, T)

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum().item())

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: slice | torch.Tensor) -> Batch:
        """A micro-batch (rows ``idx``), trimmed to its longest row."""
        am = self.attention_mask[idx]
        length = max(int(am.sum(1).max().item()), 2)
        return Batch(
            input_ids=self.input_ids[idx, :length],
            attention_mask=am[:, :length],
            mask=self.mask[idx, : length - 1],
            rollout_logp=self.rollout_logp[idx, : length - 1],
            advantages=self.advantages[idx] if self.advantages.dim() == 1 else self.advantages[idx, : length - 1],
        )


def collate(
    trajectories: list[Trajectory],
    advantages: torch.Tensor,
    pad_id: int,
    drop_mask: list[bool] | None = None,
) -> Batch:
    """Stack trajectories (right padding) with their advantages ``(N,)`` or ``(N, T_i)``.

    ``drop_mask[i] = True`` zeroes row ``i``'s loss mask (failed or filtered-out trajectories
    still occupy a row so indices stay aligned with the advantages).
    """
    n = len(trajectories)
    if advantages.shape[0] != n:
        raise ValueError(f"advantages: {advantages.shape[0]} rows for {n} trajectories")
    length = max(max(len(t.token_ids) for t in trajectories), 2)
    ids = torch.full((n, length), pad_id, dtype=torch.long)
    attn = torch.zeros((n, length), dtype=torch.long)
    mask = torch.zeros((n, length - 1))
    rlp = torch.zeros((n, length - 1))
    for i, t in enumerate(trajectories):
        k = len(t.token_ids)
        ids[i, :k] = torch.tensor(t.token_ids)
        attn[i, :k] = 1
        if drop_mask is None or not drop_mask[i]:
            mask[i, : k - 1] = torch.tensor(t.loss_mask[1:], dtype=torch.float)
        rlp[i, : k - 1] = torch.tensor(t.rollout_logprobs[1:], dtype=torch.float)
    if advantages.dim() == 2 and advantages.shape[1] != length - 1:
        adv = torch.zeros((n, length - 1), dtype=advantages.dtype)
        w = min(advantages.shape[1], length - 1)
        adv[:, :w] = advantages[:, :w]
        advantages = adv
    return Batch(ids, attn, mask, rlp, advantages.float())


def token_logprobs(
    model: torch.nn.Module, batch: Batch, *, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-slot log-probabilities ``(B, T)`` of the next token (0 where the mask is 0).

    The vocabulary projection runs only on masked slots: prompt and feedback tokens are
    usually most of a multi-turn sequence, and ``(B, T, V)`` logits would dominate memory.
    """
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    hidden = out.last_hidden_state[:, :-1]  # (B, T, H)
    sel = batch.mask > 0  # (B, T)
    logits = head(hidden[sel]).float()  # (N, V)
    logsm = torch.log_softmax(logits, dim=-1)  # (N, V)
    targets = batch.input_ids[:, 1:][sel]  # (N,)
    picked = logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N,)
    logp = torch.zeros(sel.shape, dtype=picked.dtype, device=picked.device)  # (B, T)
    logp = logp.masked_scatter(sel, picked)
    entropy = None
    if with_entropy:
        ent = -(logsm.exp() * logsm).sum(-1).detach()  # (N,)
        entropy = torch.zeros(sel.shape, dtype=ent.dtype).masked_scatter(sel, ent)
    return logp, entropy
