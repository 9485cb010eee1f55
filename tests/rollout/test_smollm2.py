"""Token exactness on the real SmolLM2-135M-Instruct (slow)."""

from __future__ import annotations

import pytest
import torch

from agentrl.rollout import collect

pytestmark = pytest.mark.slow


def test_collect_smollm2_logprobs_and_tokens_are_exact(smollm2):
    model, tok = smollm2
    groups = collect("agentrl/GuessNumber-v0", smollm2, seeds=[0, 1], group_size=2, max_turns=3,
                     max_new_tokens=16)
    canonical = 0
    for t in (t for g in groups for t in g):
        ids = torch.tensor([t.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]  # (T, V)
        errs = [abs(logp[i - 1, t.token_ids[i]].item() - t.rollout_logprobs[i])
                for i, m in enumerate(t.loss_mask) if m]
        assert max(errs) < 1e-3
        assert "template_prefix_breaks" not in t.metadata
        # where the model's ids are the canonical tokenization of its text, incremental == full
        # (a length-cut turn is closed by an appended, unmasked <|im_end|>)
        eos = [tok.eos_token_id]
        if all(tok(turn.action + "<|im_end|>", add_special_tokens=False)["input_ids"]
               == turn.token_ids + ([] if turn.token_ids[-1:] == eos else eos) for turn in t.turns):
            canonical += 1
            full = tok.apply_chat_template([m.to_template() for m in t.messages], tokenize=True)
            full = list(full["input_ids"] if hasattr(full, "keys") else full)
            assert t.token_ids == full[: len(t.token_ids)] and len(full) - len(t.token_ids) == 1  # final "\n"
    assert canonical >= 1
