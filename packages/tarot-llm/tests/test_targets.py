"""MMLU / BBH target builders: LESS's file layouts (generated) and lm-eval's embedded exemplars."""

from __future__ import annotations

import csv
import json

import pytest
from tarot_llm.io import DataError
from tarot_llm.targets import (
    BBH_TASKS,
    build_bbh_targets,
    build_bbh_targets_lm_eval,
    build_mmlu_targets,
    build_mmlu_targets_lm_eval,
    load_targets_jsonl,
    parse_flan_mmlu_question,
)


def make_mmlu_tree(root, subjects=("anatomy", "high_school_physics"), rows=6):
    for split in ("dev", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for s in subjects:
            with open(root / split / f"{s}_{split}.csv", "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                for i in range(rows):
                    w.writerow([f"{s} question {i}, with comma?", "a1", "b1", "c1", "d1", "ABCD"[i % 4]])
    return root


def test_mmlu_csv_targets(tmp_path):
    root = make_mmlu_tree(tmp_path / "eval" / "mmlu")
    t = build_mmlu_targets(root)
    assert len(t) == 10 and [x.subtask for x in t] == ["anatomy"] * 5 + ["high_school_physics"] * 5
    assert t[5].query == ("The following are multiple choice questions (with answers) about  high school physics.\n\n"
                          "high_school_physics question 0, with comma?\nA. a1\nB. b1\nC. c1\nD. d1\nAnswer:")
    assert t[5].assistant_prefix == "The answer is:" and t[5].completion == " A" and t[6].completion == " B"
    assert len(build_mmlu_targets(root, subjects=["anatomy"], per_subject=2)) == 2


def test_mmlu_errors(tmp_path):
    root = make_mmlu_tree(tmp_path / "mmlu")
    with pytest.raises(DataError) as exc:
        build_mmlu_targets(root, subjects=["astrology"])
    assert "unknown MMLU subject 'astrology'" in str(exc.value) and "\n" not in str(exc.value)
    (root / "dev" / "anatomy_dev.csv").write_text("q,a,b,c,d,A\nq2,a,b,c,E\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"anatomy_dev.csv:2: expected 6 columns"):
        build_mmlu_targets(root)


def bbh_prompt(desc, n):
    ex = [f"Q: question {i}?\nOptions:\n- Yes\n- No\nA: Let's think step by step. Reason {i}. So the answer is Yes."
          for i in range(n)]
    return desc + "\n\n" + "\n\n".join(ex)


def test_bbh_json_targets(tmp_path):
    f = tmp_path / "bbh-three-shot.json"
    f.write_text(json.dumps({"navigate": bbh_prompt("Navigate the grid.", 3), "snarks": bbh_prompt("Snarks.", 3)}))
    t = build_bbh_targets(f)
    assert len(t) == 6 and {x.subtask for x in t} == {"navigate", "snarks"}
    first = t[0]
    assert first.query == ("Navigate the grid.\n\n"
                           "Q: question 1?\nOptions:\n- Yes\n- No\nA: Let's think step by step. Reason 1. So the "
                           "answer is Yes.\n\nQ: question 2?\nOptions:\n- Yes\n- No\nA: Let's think step by step. "
                           "Reason 2. So the answer is Yes.\n\nQ: question 0?\nOptions:\n- Yes\n- No")
    assert first.assistant_prefix == "A:"
    assert first.completion == " Let's think step by step. Reason 0. So the answer is Yes."
    f.write_text(json.dumps({"navigate": bbh_prompt("Navigate.", 2)}))
    with pytest.raises(DataError, match="has 2 exemplars"):
        build_bbh_targets(f)
    f.write_text(json.dumps({"navigate": bbh_prompt("Navigate.", 3)}))
    with pytest.raises(DataError, match="unknown BBH task 'snarks'"):
        build_bbh_targets(f, tasks=["snarks"])


def test_lm_eval_embedded_targets(tmp_path):
    bbh = build_bbh_targets_lm_eval()
    assert len(bbh) == 81 and [x.subtask for x in bbh[::3]] == list(BBH_TASKS)
    assert all(x.completion.startswith(" Let's think step by step. ") for x in bbh)
    assert all(x.query.count("\nA: Let's think step by step.") == 2 for x in bbh)
    mmlu, dropped = build_mmlu_targets_lm_eval()
    assert len(mmlu) == 281 and len({x.subtask for x in mmlu}) == 57
    assert dropped == ["mmlu_college_chemistry.yaml sample 3: final answer 'E' is not one of A-D"]
    assert {x.completion for x in mmlu} <= {" A", " B", " C", " D"}
    anat = [x for x in mmlu if x.subtask == "anatomy"][0]
    assert anat.query.endswith("\nA. Abdominal\nB. Cranial\nC. Pleural\nD. Spinal\nAnswer:") and anat.completion == " B"
    with pytest.raises(DataError, match="unknown MMLU subject"):
        build_mmlu_targets_lm_eval(["astrology"])
    # round trip through targets.jsonl
    from tarot_llm.io import write_jsonl

    p = write_jsonl(tmp_path / "targets.jsonl", [x.to_record() for x in bbh[:3]])
    assert load_targets_jsonl(p) == bbh[:3]


def test_parse_flan_question_layouts():
    assert parse_flan_mmlu_question("Stem?\n(A) x (B) y (C) z (D) w") == ("Stem?", ["x", "y", "z", "w"])
    assert parse_flan_mmlu_question("Stem (A) inside?\n(A) x\n(B) y\n(C) z\n(D) w") == ("Stem (A) inside?",
                                                                                        ["x", "y", "z", "w"])
    assert parse_flan_mmlu_question("no options") is None
