"""The "does TAROT win?" verdict: computed from paired per-question results, never written by hand."""

from __future__ import annotations

import numpy as np
import pytest
from tarot_llm.comparison import compare_methods, verdict_lines
from tarot_llm.io import write_json


def _write(d, name, correct, nll, group="tarot_mmlu"):
    items = [{"task": f"{group}_x", "doc_id": i, "doc_hash": f"h{i}", "score": float(c), "gold_nll": float(v)}
             for i, (c, v) in enumerate(zip(correct, nll))]
    write_json(d / f"{name}.{group}.json", {"items": items})


def test_clear_win_is_reported_as_a_win(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 300)
    nll = rng.uniform(1, 2, 300)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:60]] = 1  # 60 more right answers, none lost
    _write(tmp_path, "random", base, nll)
    _write(tmp_path, "less", base, nll)
    _write(tmp_path, "fixed_size", better, nll - 0.1)
    rows = compare_methods(tmp_path, ["tarot_mmlu"], ["random", "less", "fixed_size"])
    assert [(r["method"], r["baseline"]) for r in rows] == [("fixed_size", "random"), ("fixed_size", "less")]
    assert rows[0]["accuracy"]["mean"] == pytest.approx(0.2) and rows[0]["accuracy"]["verdict"] == "better"
    assert rows[0]["gold_nll"]["mean"] == pytest.approx(0.1) and rows[0]["gold_nll"]["verdict"] == "better"
    lines = verdict_lines(rows)
    assert lines[0].startswith("TAROT wins on accuracy: fixed_size on tarot_mmlu is measurably better than every "
                               "baseline (random, less; smallest margin +0.2")
    assert lines[1].startswith("TAROT wins on the gold answer's NLL: fixed_size on tarot_mmlu")
    assert "accuracy +20.0 points" in lines[2] and "NLL lower by +0.1000 nats" in lines[2]


def test_noise_is_reported_as_no_win(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, 100), rng.integers(0, 2, 100)  # two independent coin-flip methods
    nll = rng.uniform(1, 2, 100)
    _write(tmp_path, "random", a, nll)
    _write(tmp_path, "otm", b, nll + rng.normal(scale=0.01, size=100))
    _write(tmp_path, "base", a, nll)
    rows = compare_methods(tmp_path, ["tarot_mmlu"], ["base", "random", "otm"])
    assert {r["baseline"] for r in rows} == {"random", "base"}
    assert all(r["accuracy"]["verdict"] == "no measurable difference" for r in rows)
    assert verdict_lines(rows)[0].startswith("TAROT does not win on accuracy in this run: no OT selection is "
                                             "measurably better than every baseline (base, random")


def test_a_loss_is_reported_as_a_loss(tmp_path):
    ones = np.ones(80)
    _write(tmp_path, "random", ones, ones)
    _write(tmp_path, "fixed_size", np.r_[np.zeros(30), np.ones(50)], ones)
    line = verdict_lines(compare_methods(tmp_path, ["tarot_mmlu"], ["random", "fixed_size"]))[0]
    assert line.startswith("TAROT does not win on accuracy: it is measurably worse for fixed_size below random")


def test_identical_answers_are_said_plainly(tmp_path):
    _write(tmp_path, "random", [1, 0, 1, 0], [1.0, 2.0, 1.0, 2.0])
    _write(tmp_path, "fixed_size", [1, 0, 1, 0], [0.9, 1.9, 0.95, 1.9])
    lines = verdict_lines(compare_methods(tmp_path, ["tarot_mmlu"], ["random", "fixed_size"]))
    assert lines[0] == ("Accuracy cannot separate the methods: every model scores every question the same "
                        "(4 tarot_mmlu).")
    assert "accuracy identical on every question" in lines[2] and "NLL lower by +0.0875 nats" in lines[2]
    assert "trained once" in lines[-1]


def test_different_questions_are_refused(tmp_path):
    _write(tmp_path, "random", [1, 0, 1], [1, 1, 1])
    _write(tmp_path, "fixed_size", [1, 0], [1, 1])
    with pytest.raises(ValueError, match="different questions"):
        compare_methods(tmp_path, ["tarot_mmlu"], ["random", "fixed_size"])


def test_nothing_to_compare():
    assert verdict_lines([]) == ["No comparison: no OT method and baseline were both evaluated."]


def test_a_win_over_one_baseline_only_is_not_a_win(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2, 300)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:60]] = 1
    nll = rng.uniform(1, 2, 300)
    _write(tmp_path, "random", base, nll)
    _write(tmp_path, "less", better, nll)  # LESS is as good as fixed_size
    _write(tmp_path, "fixed_size", better, nll)
    lines = verdict_lines(compare_methods(tmp_path, ["tarot_mmlu"], ["random", "less", "fixed_size"]))
    assert lines[0].startswith("TAROT does not win on accuracy in this run")


def test_seeds_are_paired_and_reported(tmp_path):
    rng = np.random.default_rng(3)
    nll = rng.uniform(1, 2, 200)
    for s in (0, 1, 2):
        base = rng.integers(0, 2, 200)
        better = base.copy()
        better[np.flatnonzero(base == 0)[:40]] = 1
        _write(tmp_path, f"random-seed{s}", base, nll)
        _write(tmp_path, f"fixed_size-seed{s}", better, nll - 0.05)
    _write(tmp_path, "base", rng.integers(0, 2, 200), nll + 0.5)
    rows = compare_methods(tmp_path, ["tarot_mmlu"], ["base", "random", "fixed_size"], seeds=[0, 1, 2])
    assert {r["baseline"] for r in rows} == {"random", "base"} and all(r["seeds"] == 3 for r in rows)
    lines = verdict_lines(rows)
    assert lines[0].startswith("TAROT wins on accuracy: fixed_size on tarot_mmlu")
    assert "3 training seeds" in lines[-1]
