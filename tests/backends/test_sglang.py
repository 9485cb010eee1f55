"""SGLang backend: response parsing (fast); a real SGLang server on a GPU (marked gpu).

SGLang has no pip-only CPU install, so the server tests skip here with the reason. On a GPU
machine with ``pip install sglang``: ``pytest -m gpu tests/backends/test_sglang.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest
import torch

from agentrl.backends import SamplingParams, make_backend
from agentrl.backends.base import BackendError, InferenceBackend
from agentrl.backends.server import free_port
from agentrl.backends.sglang import SGLangBackend, SGLangServer, parse_generate


def _answer(ids: list[int], lps: list[float], reason: str | None = "stop") -> dict:
    return {"text": "..", "output_ids": ids,
            "meta_info": {"finish_reason": {"type": reason} if reason else None,
                          "output_token_logprobs": [[lp, i, None] for lp, i in zip(lps, ids, strict=True)]}}


def test_parse_generate_reads_meta_info():
    gen = parse_generate(_answer([7, 2], [-0.25, -2.0]), version=3)
    assert (gen.token_ids, gen.logprobs, gen.finish_reason, gen.weight_version) == (
        [7, 2], [-0.25, -2.0], "stop", 3)
    assert parse_generate(_answer([9], [-1.0], "length"), 0).finish_reason == "length"


def test_parse_generate_rejects_inconsistent_answers():
    bad_ids = {**_answer([7, 2], [-0.25, -2.0]), "output_ids": [7, 3]}
    with pytest.raises(BackendError, match=r"output_ids .* disagree with the logprob tokens"):
        parse_generate(bad_ids, 0)
    with pytest.raises(BackendError, match="unexpected finish_reason None"):
        parse_generate(_answer([7], [-0.1], None), 0)
    with pytest.raises(BackendError, match=r"lacks meta_info\.output_token_logprobs"):
        parse_generate({"text": "x", "meta_info": {}}, 0)


def test_unreachable_sglang_server_is_reported():
    backend = make_backend("sglang", base_url=f"http://127.0.0.1:{free_port()}", retries=1)
    assert isinstance(backend, InferenceBackend)
    backend.http.backoff = 0.01

    async def go() -> None:
        assert await backend.health() is False
        with pytest.raises(BackendError, match="server unreachable after 2 attempts"):
            await backend.generate([1, 2], SamplingParams())
        await backend.close()

    asyncio.run(go())


def test_sglang_server_checks_its_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model_dir: no config\.json in"):
        SGLangServer(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"mem_fraction must be in \(0, 1\], got 2"):
        SGLangServer(tmp_path, mem_fraction=2)
    server = SGLangServer(tmp_path, port=4321, python="/usr/bin/python3")
    assert server.argv[:3] == ["/usr/bin/python3", "-m", "sglang.launch_server"]
    assert server.env["SGLANG_RETURN_ORIGINAL_LOGPROB"] == "1" and server.url.endswith(":4321")


# ----------------------------------------------------------------------------- real server

TOL = 5e-3  # float32 on a GPU vs transformers on the same device


def _gpu_missing() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU (SGLang has no pip-only CPU install)"
    if importlib.util.find_spec("sglang") is None:
        return "sglang is not installed (pip install sglang on the GPU machine)"
    return None


@pytest.fixture(scope="module")
def served():
    if reason := _gpu_missing():
        pytest.skip(reason)
    from agentrl.backends.vllm import embedded_untied_dir

    backend = SGLangBackend(model_dir=embedded_untied_dir(), server_options={
        "extra_args": ["--dtype", "float32", "--disable-cuda-graph"], "startup_timeout": 900})
    yield backend
    asyncio.run(backend.close())


@pytest.fixture(scope="module")
def reference(served):
    from agentrl.models import load_model

    model, tok = load_model(str(served.model_dir))
    return model.to("cuda"), tok


def _err(model, prompt: list[int], gen) -> float:
    ids = torch.tensor([prompt + gen.token_ids], device="cuda")  # (1, T)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]  # (T, V)
    pos = torch.arange(len(prompt) - 1, ids.shape[1] - 1, device="cuda")
    ref = logp[pos, torch.tensor(gen.token_ids, device="cuda")].cpu()
    return float((ref - torch.tensor(gen.logprobs)).abs().max())


def _prompt(tok, text: str) -> list[int]:
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                  tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.mark.gpu
def test_sglang_generate_returns_raw_logprobs(served, reference):
    model, tok = reference
    prompt = _prompt(tok, "Guess my number between 1 and 100.")

    async def go():
        assert await served.health()
        return [await served.generate(prompt, SamplingParams(temperature=t, max_new_tokens=16, seed=5))
                for t in (1.0, 0.6)]

    for gen in asyncio.run(go()):
        assert len(gen.token_ids) == len(gen.logprobs) >= 1 and gen.finish_reason in ("stop", "length")
        assert _err(model, prompt, gen) < TOL


@pytest.mark.gpu
def test_sglang_weight_updates_match_transformers(served, reference, tmp_path: Path):
    import copy

    model, tok = reference
    prompt = _prompt(tok, "Say hello.")
    results = []
    for version, name in enumerate(("lm_head.weight", "model.embed_tokens.weight"), start=1):
        new = copy.deepcopy(model)
        w = dict(new.named_parameters())[name]
        with torch.no_grad():
            w.add_(torch.randn_like(w) * 0.5 * w.std())
        asyncio.run(served.update_weights(new.state_dict()))
        gen = asyncio.run(served.generate(prompt, SamplingParams(max_new_tokens=16, seed=1)))
        assert gen.weight_version == version == served.weight_version
        results.append((_err(new, prompt, gen), _err(model, prompt, gen)))
    asyncio.run(served.update_weights(served.model_dir, version=0))
    for err_new, err_old in results:
        assert err_new < TOL and err_old > 10 * TOL
