import torch

from agentrl.train.batch import collate, token_logprobs
from agentrl.train.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from agentrl.types import Trajectory


def _traj(ids, mask, logps=None):
    logps = logps or [0.0] * len(ids)
    return Trajectory(prompt_ids=ids[:2], token_ids=ids, loss_mask=mask, rollout_logprobs=logps)


def test_collate_shifts_mask_and_pads():
    a = _traj([5, 6, 7, 8, 2], [0, 0, 1, 1, 1], [0, 0, -0.5, -0.25, -1.0])
    b = _traj([5, 6, 9], [0, 0, 1], [0, 0, -2.0])
    batch = collate([a, b], torch.tensor([1.0, -1.0]), pad_id=2)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 2], [5, 6, 9, 2, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # slot t predicts token t+1
    assert batch.mask.tolist() == [[0, 1, 1, 1], [0, 1, 0, 0]]
    assert batch.rollout_logp.tolist() == [[0, -0.5, -0.25, -1.0], [0, -2.0, 0, 0]]
    dropped = collate([a, b], torch.tensor([1.0, -1.0]), pad_id=2, drop_mask=[True, False])
    assert dropped.mask[0].sum() == 0 and dropped.mask[1].sum() == 1
    mb = batch.select(slice(1, 2))
    assert mb.input_ids.tolist() == [[5, 6, 9]] and mb.mask.tolist() == [[0, 1]]


def test_token_logprobs_equal_full_log_softmax(tiny):
    model, _ = tiny
    torch.manual_seed(0)
    trajs = [_traj(torch.randint(3, 1000, (n,)).tolist(), [0, 0] + [1] * (n - 2)) for n in (7, 4, 9)]
    batch = collate(trajs, torch.zeros(3), pad_id=2)
    with torch.no_grad():
        logp, ent = token_logprobs(model, batch, with_entropy=True)
        for i, t in enumerate(trajs):
            ids = torch.tensor([t.token_ids])
            full = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)  # (T, V)
            want = full.gather(-1, ids[0, 1:, None]).squeeze(-1)
            n = len(t.token_ids) - 1
            m = batch.mask[i, :n] > 0
            assert torch.allclose(logp[i, :n][m], want[m], atol=1e-5)
            assert (logp[i][batch.mask[i] == 0] == 0).all()
            h = -(full.exp() * full).sum(-1)
            assert torch.allclose(ent[i, :n][m], h[m], atol=1e-4)


def test_checkpoints_are_atomic_and_pruned(tmp_path, tiny):
    model, tok = tiny
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, tok, {"x": step}, "seed: 0\n", keep=2)
    (tmp_path / "checkpoints" / ".step_000004-crashed").mkdir()  # a crash mid-write
    (tmp_path / "checkpoints" / "step_000005").mkdir()  # incomplete: no trainer.pt
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_000002", "step_000003"]
    assert latest_checkpoint(tmp_path).name == "step_000003"
