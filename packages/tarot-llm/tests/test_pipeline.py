"""End to end on the tiny model through the CLI: convert → warmup → featurize → select → train → evaluate → report,
plus an exact check of the stored features against a hand-built Adam-preconditioned, projected gradient."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
import yaml
from tarot_llm.cli import build_parser, main
from tarot_llm.training import epoch_mean_lrs, warmup_subset


def make_inputs(root):
    """Raw Dolly + FLAN files (converted by the CLI), a completion-schema file, an MMLU CSV tree, a BBH json."""
    raw = root / "raw"
    raw.mkdir(parents=True)
    (raw / "dolly.jsonl").write_text("".join(json.dumps(
        {"instruction": f"Name fact number {i}.", "context": "Some context." if i % 2 else "",
         "response": f"Fact {i} is {'ABCD'[i % 4]}.", "category": "open_qa"}) + "\n" for i in range(12)))
    (raw / "flan.jsonl").write_text("".join(json.dumps(
        {"inputs": f"Question: which letter is {i % 4}?\nA. one\nB. two", "targets": "ABCD"[i % 4]}) + "\n"
        for i in range(12)))
    (root / "pool").mkdir()
    (root / "pool" / "sum_data.jsonl").write_text("".join(json.dumps(
        {"dataset": "sum", "id": f"sum_{i}", "prompt": f"Summarize: the quick brown fox {i}.",
         "completion": "fox " * (i % 3 + 1)}) + "\n" for i in range(12)))
    mm = root / "mmlu"
    for split in ("dev", "test"):
        (mm / split).mkdir(parents=True)
        for s in ("anatomy", "physics"):
            with open(mm / split / f"{s}_{split}.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                for i in range(5):
                    w.writerow([f"{s} question {i}?", "one", "two", "three", "four", "ABCD"[i % 4]])
    ex = "\n\n".join(f"Q: Is {k} even?\nA: Let's think step by step. {k} mod 2. So the answer is {'YN'[k % 2]}."
                     for k in (2, 3, 4))
    (root / "bbh.json").write_text(json.dumps({"parity": "Decide parity.\n\n" + ex}))
    return mm


def _must_not_run(*a, **k):
    raise AssertionError("a finished step ran again")


def test_cli_end_to_end(tmp_path, tiny_model_dir, capsys, monkeypatch):
    mm = make_inputs(tmp_path)
    for kind, name in (("dolly", "dolly"), ("flan_v2", "flan")):
        assert main(["convert", kind, str(tmp_path / "raw" / f"{name}.jsonl"),
                     str(tmp_path / "pool" / f"{kind}_data.jsonl")]) == 0
    cfg = {"model": str(tiny_model_dir), "template": "tulu", "max_length": 64,
           "data": {"pool": [str(tmp_path / "pool" / f) for f in ("dolly_data.jsonl", "flan_v2_data.jsonl",
                                                                 "sum_data.jsonl")],
                    "targets": [{"mmlu_csv": str(mm)}, {"bbh_json": str(tmp_path / "bbh.json")}],
                    "target_max_length": 160},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
           "warmup": {"percentage": 0.5, "epochs": 2, "lr": 1e-3, "batch_size": 2, "grad_accum": 1},
           "features": {"proj_dim": 16, "batch_size": 4},
           "select": {"methods": ["random", "less", "fixed_size", "otm"], "ratio": 0.25},
           "train": {"epochs": 1, "lr": 1e-3, "grad_accum": 1},
           "eval": {"mmlu": {"source": str(mm), "limit": 3}, "batch_size": 2}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    common = ["--out", str(run), "--no-progress"]
    assert main(["warmup", "--config", str(tmp_path / "cfg.yaml"), *common]) == 0
    warm = json.loads((run / "warmup" / "warmup.json").read_text())
    assert [c["name"] for c in warm["checkpoints"]] == ["epoch1", "epoch2"]
    assert len(warm["subset_indices"]) == 18 and warm["steps_per_epoch"] == [9, 9]
    assert warm["checkpoints"][0]["lr_mean"] > warm["checkpoints"][1]["lr_mean"] > 0
    assert np.isclose(warm["checkpoints"][0]["lr_mean"], np.mean(warm["step_lrs"][:9]))
    assert (run / "warmup" / "config.yaml").exists()
    with monkeypatch.context() as mp:  # a rerun reuses the finished warm-up ...
        mp.setattr("tarot_llm.pipeline.run_warmup", _must_not_run)
        assert main(["warmup", *common]) == 0
    assert json.loads((run / "warmup" / "warmup.json").read_text()) == warm

    assert main(["featurize", *common]) == 0  # reuses the run's saved config
    from tarot import FeatureStore

    store = FeatureStore.open(run / "features")
    assert store.count("candidate") == 36 and store.count("target") == 13 == store.count("target_adam")
    assert store.groups("target")[:5] == ["anatomy"] * 5 and store.groups("target")[-3:] == ["parity"] * 3
    assert set(store.sources("candidate")) == {"dolly", "flan_v2", "sum"}
    check_feature_row(run, tiny_model_dir, cfg, store)
    # the same features from two shards (rank 0 last merges them, per-checkpoint arrays included)
    import shutil

    run2 = tmp_path / "run2"
    shutil.copytree(run / "warmup", run2 / "warmup")
    for rank in ("1", "0"):
        assert main(["featurize", "--config", str(tmp_path / "cfg.yaml"), "--out", str(run2), "--no-progress",
                     "--rank", rank, "--world-size", "2"]) == 0
    merged = FeatureStore.open(run2 / "features")
    for split in store.splits:
        assert np.array_equal(np.asarray(merged.features(split)), np.asarray(store.features(split)))
        assert np.array_equal(np.load(merged.partial_paths(split, 1)[0]), np.load(store.partial_paths(split, 1)[0]))

    capsys.readouterr()
    assert main(["select", *common, "--dry-run"]) == 0  # the estimate of every configured method, nothing written
    printed = capsys.readouterr().out
    assert [line.split(":")[0] for line in printed.splitlines() if "estimate (" in line] == cfg["select"]["methods"]
    assert "N=36, M=13" in printed and not (run / "selection").exists()
    assert main(["select", *common]) == 0
    sel = json.loads((run / "selection" / "summary.json").read_text())
    for m in ("random", "less"):
        assert sel[m]["size"] == 9, m
    assert sel["fixed_size"]["size"] == 9  # exactly n (spec §8)
    assert sel["fixed_size"]["training_items"] == 2 * sel["fixed_size"]["size"]  # weighted repeats: R = 2n
    assert sum(sel["less"]["composition"].values()) == 9
    lines = (run / "selection" / "less" / "sorted.csv").read_text().splitlines()
    scores = [float(x.split(", ")[2]) for x in lines[1:]]
    assert lines[0] == "file name, index, score" and len(scores) == 36 and scores == sorted(scores, reverse=True)
    top = [json.loads(x)["id"] for x in (run / "selection" / "less" / "top_p0.25.jsonl").read_text().splitlines()]
    assert sorted(top) == sorted(json.loads(x)["id"] for x in
                                 (run / "selection" / "less" / "selected.jsonl").read_text().splitlines())

    assert main(["train", *common]) == 0
    assert main(["evaluate", *common]) == 0
    ev_before = (run / "eval" / "random.tarot_mmlu.json").read_bytes()
    with monkeypatch.context() as mp:  # ... and finished trainings and evaluations (after a crash, say)
        mp.setattr("tarot_llm.pipeline.train_lora", _must_not_run)
        mp.setattr("tarot_llm.evaluation.run_lm_eval", _must_not_run)
        assert main(["train", *common]) == 0
        assert main(["evaluate", *common]) == 0
    assert (run / "eval" / "random.tarot_mmlu.json").read_bytes() == ev_before
    with monkeypatch.context() as mp:  # a changed setting is not reused
        mp.setattr("tarot_llm.evaluation.run_lm_eval", _must_not_run)
        with pytest.raises(AssertionError, match="ran again"):
            main(["evaluate", *common, "--set", "eval.mmlu.limit=2"])
    ev = json.loads((run / "eval" / "summary.json").read_text())["results"]
    assert {"base", "random", "less", "fixed_size"} <= set(ev)
    assert all(0 <= r["tarot_mmlu"]["score"] <= 1 and r["tarot_mmlu"]["n"] == 6 for r in ev.values())
    assert json.loads((run / "eval" / "less.tarot_mmlu.json").read_text())["protocol"]["num_fewshot"] == 5
    cmp = json.loads((run / "eval" / "comparisons.json").read_text())
    pairs = {(r["method"], r["baseline"]) for r in cmp["comparisons"]}
    assert {("fixed_size", "random"), ("fixed_size", "less"), ("fixed_size", "base")} <= pairs
    assert all(r["n"] == 6 and r["gold_nll"] is not None for r in cmp["comparisons"])
    # a crash (SIGKILL) during select, train and evaluate: the same commands run again end with the results of
    # the uninterrupted run (finished trainings and evaluations are kept, the interrupted one starts over)
    from tarot.app.conventions import kill_while_writing

    crashed = tmp_path / "crashed"
    shutil.copytree(run, crashed, ignore=shutil.ignore_patterns("selection", "train", "eval"))
    assert kill_while_writing("tarot_llm.cli", ["select", "--no-progress"], crashed, after_lock_s=0.5)
    assert main(["select", "--out", str(crashed), "--no-progress"]) == 0
    for m in cfg["select"]["methods"]:
        assert (crashed / "selection" / m / "selected.jsonl").read_bytes() == \
            (run / "selection" / m / "selected.jsonl").read_bytes(), m
    assert kill_while_writing("tarot_llm.cli", ["train", "--no-progress"], crashed, after_lock_s=1.0)
    first = crashed / "train" / "random"
    assert not (first / "train.json").exists() or (first / "adapter").is_dir()  # marked finished only when it is
    assert main(["train", "--out", str(crashed), "--no-progress"]) == 0
    assert kill_while_writing("tarot_llm.cli", ["evaluate", "--no-progress"], crashed, after_lock_s=1.0)
    assert main(["evaluate", "--out", str(crashed), "--no-progress"]) == 0
    again = json.loads((crashed / "eval" / "summary.json").read_text())["results"]
    scores = {m: r["tarot_mmlu"]["score"] for m, r in ev.items()}
    assert {m: r["tarot_mmlu"]["score"] for m, r in again.items()} == scores
    assert main(["report", *common]) == 0
    html = (run / "report" / "index.html").read_text()
    assert "Evaluation protocol" in html and "fixed_size" in html
    assert "Does TAROT win?" in html and cmp["verdict"][0].split(":")[0] in html
    assert "pool examples featurized; 0 left out" in html
    # what was selected: per method and source, selected examples with their score, closest to the target first
    part = html.split(">What was selected</h2>")[1].split("<h2")[0].split("<h3>fixed_size (9 selected)</h3>")[1]
    part = part.split("<h3>")[0]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr><td.*?</tr>", part)]
    fixed = [json.loads(x) for x in (run / "selection" / "fixed_size" / "selected.jsonl").read_text().splitlines()]
    per_source = {s: len({r["id"] for r in fixed if r["dataset"] == s}) for s in {r["dataset"] for r in fixed}}
    assert len(rows) == sum(min(3, n) for n in per_source.values())
    assert {r[3] for r in rows} <= {r["id"] for r in fixed}
    by_source: dict[str, list[float]] = {}
    src = None
    for r in rows:
        src = r[0] or src
        by_source.setdefault(src, []).append(float(r[2]))
        assert r[4]  # the instruction's first characters
    assert set(by_source) == set(per_source)
    assert all(v == sorted(v, reverse=True) for v in by_source.values())

    # several training seeds: one run per method and seed, paired over seeds and questions
    seeds = ["--set", "train.seeds=[0,1]", "--set", "eval.mmlu.limit=3"]
    assert main(["train", *common, *seeds]) == 0
    assert main(["evaluate", *common, *seeds]) == 0
    tr = json.loads((run / "train" / "summary.json").read_text())
    assert {f"{m}-seed{s}" for m in ("random", "less", "fixed_size") for s in (0, 1)} <= set(tr)
    assert tr["fixed_size-seed1"]["seed"] == 1 and tr["fixed_size-seed1"]["method"] == "fixed_size"
    a0, a1 = (run / "train" / "fixed_size-seed0" / "adapter", run / "train" / "fixed_size-seed1" / "adapter")
    assert (a0 / "adapter_model.safetensors").read_bytes() != (a1 / "adapter_model.safetensors").read_bytes()
    ev = json.loads((run / "eval" / "summary.json").read_text())["results"]
    assert {"base", "random-seed0", "random-seed1", "fixed_size-seed1"} <= set(ev)
    cmp = json.loads((run / "eval" / "comparisons.json").read_text())
    assert cmp["comparisons"] and all(r["seeds"] == 2 for r in cmp["comparisons"])
    assert "2 training seeds" in cmp["verdict"][-1] and "2 training seeds" in cmp["method"]
    assert main(["report", *common, *seeds]) == 0
    assert "fixed_size-seed1" in (run / "report" / "index.html").read_text()


def check_feature_row(run, model_dir, cfg, store):
    """Row 0 of every per-checkpoint candidate array equals P · Adam(g) computed by hand; targets use plain g."""
    from peft import PeftModel, set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from tarot import GradientFeaturizer
    from tarot_llm.data import load_pool
    from tarot_llm.optim_state import adam_precondition, load_adam_moments
    from tarot_llm.pipeline import CausalLMLoss, encode_target
    from tarot_llm.targets import load_targets_jsonl
    from tarot_llm.templates import encode_example
    from transformers import AutoModelForCausalLM, AutoTokenizer

    warm = json.loads((run / "warmup" / "warmup.json").read_text())
    tok = AutoTokenizer.from_pretrained(model_dir)
    pool = load_pool(cfg["data"]["pool"])
    target = load_targets_jsonl(run / "targets.jsonl")[0]
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir),
                                   warm["checkpoints"][0]["path"], is_trainable=True)
    pm.eval()
    feat = GradientFeaturizer(pm, CausalLMLoss(), proj_dim=16, seed=0, projector=store.manifest["projector"]["type"],
                              mode="loop")
    cases = [("candidate", encode_example(tok, pool[0], "tulu", 64), True),
             ("target", encode_target(tok, target, "tulu", 160), False),
             ("target_adam", encode_target(tok, target, "tulu", 160), True)]
    for split, enc, adam in cases:
        batch = {"input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels),
                 "attention_mask": torch.ones(len(enc.input_ids), dtype=torch.long)}
        total = np.zeros(16)
        for ci, ck in enumerate(warm["checkpoints"]):
            set_peft_model_state_dict(pm, load_peft_weights(ck["path"]))
            names = [n for n, p in pm.named_parameters() if p.requires_grad]
            loss = pm(**{k: v.unsqueeze(0) for k, v in batch.items()}).loss
            grads = torch.autograd.grad(loss, [p for n, p in pm.named_parameters() if p.requires_grad])
            mom = load_adam_moments(ck["path"], pm).moments
            pre = {n: adam_precondition(g.unsqueeze(0), *mom[n]) if adam else g.unsqueeze(0)
                   for n, g in zip(names, grads)}
            expected = feat.project(pre)[0].numpy()
            stored = np.load(store.partial_paths(split, ci)[0])[0]
            np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-7, err_msg=split)
            total += ck["lr_mean"] * expected
        np.testing.assert_allclose(np.asarray(store.features(split))[0], total, rtol=1e-4, atol=1e-9, err_msg=split)


def test_bad_inputs_give_one_line_cli_errors(tmp_path, capsys):
    bad = tmp_path / "dolly.jsonl"
    bad.write_text('{"instruction": "x", "context": "", "response": "y"}\n{"instruction": \n')
    assert main(["convert", "dolly", str(bad), str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tarot-llm convert: error: ") and f"{bad}:2: invalid JSON" in err and "\n" not in err
    assert not (tmp_path / "out.jsonl").exists()
    assert main(["select", "--out", str(tmp_path / "nothing"), "--set", "select.ratoi=0.1"]) == 2
    assert "unknown config key 'select.ratoi'" in capsys.readouterr().err
    # a missing feature store: one line naming it, no traceback
    assert main(["select", "--out", str(tmp_path / "nothing"), "--store", str(tmp_path / "nostore")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tarot-llm select: error: ") and "nostore" in err and err.count("\n") == 1
    # the old spelling --run still works for one release, with a deprecation line
    assert main(["select", "--run", str(tmp_path / "nothing"), "--set", "select.ratoi=0.1"]) == 2
    err = capsys.readouterr().err
    assert "warning: --run is deprecated and goes in the next release; use --out" in err
    assert "unknown config key 'select.ratoi'" in err
    with pytest.raises(SystemExit) as exc:
        main(["select"])
    assert exc.value.code == 2 and "the following arguments are required: --out" in capsys.readouterr().err


def test_tarot_llm_follows_the_cli_convention(capsys):
    from tarot.app.conventions import check_convention

    settings = {"--config", "--set", "--print-config", "--no-progress", "--out"}
    stages = ("warmup", "featurize", "train", "evaluate", "report", "demo")
    needs = {"select": {"--store", *settings}, **{s: settings for s in stages}, "convert": set()}
    assert check_convention(build_parser(), needs) == []
    assert main(["demo", "--quick", "--out", "unused", "--set", "train.epochs=2", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["epochs"] == 2


def test_help_lists_commands():
    text = build_parser().format_help()
    for cmd in ("convert", "warmup", "featurize", "select", "train", "evaluate", "demo"):
        assert cmd in text


def test_less_lr_weights_sanity():
    """LESS's example: a linear schedule over 420 steps (13 warm-up) gives epoch means within ~2 % of its weights."""
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-5)
    sched = get_linear_schedule_with_warmup(opt, 13, 420)
    lrs = []
    for _ in range(420):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    means = epoch_mean_lrs(lrs, [105, 106, 106, 103])
    for got, less in zip(means, [1.6877e-05, 1.2859e-05, 7.7030e-06, 2.5616e-06]):
        assert got == pytest.approx(less, rel=0.02)
    assert list(warmup_subset(100, 0.05, 42)) == list(np.random.RandomState(42).permutation(100)[:5])


def test_a_folder_without_an_adapter_is_one_clear_error(tmp_path):
    from tarot_llm.evaluation import merged_model
    from tarot_llm.io import DataError
    from tarot_llm.models import check_adapter_dir

    with pytest.raises(DataError, match="adapter folder not found"):
        check_adapter_dir(tmp_path / "missing")
    empty = tmp_path / "ckpt"
    empty.mkdir()
    with pytest.raises(DataError, match=r"ckpt: not a LoRA adapter folder \(no adapter_config.json\)"):
        merged_model("not-a-model", str(empty))  # refused before any model is loaded (no HFValidationError)
    (empty / "adapter_config.json").write_text("{}")
    with pytest.raises(DataError, match="adapter_config.json without weights"):
        check_adapter_dir(empty)
    (empty / "adapter_model.safetensors").write_bytes(b"")
    assert check_adapter_dir(empty) == empty
