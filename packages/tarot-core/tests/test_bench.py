"""Tests of the selection-step benchmark (tarot.app.bench): table files, skipped cells and the dense reference recipe.

Timings are never asserted; only that the benchmark runs end to end and writes complete tables.
"""

from __future__ import annotations

import csv
import re
import warnings

import numpy as np
import pytest
import tarot
from tarot.app.bench import (
    COLUMNS,
    dense_layer_selection,
    dense_sinkhorn,
    generate_features,
    main,
    run_benchmark,
)


def test_tiny_benchmark_end_to_end_writes_all_columns(tmp_path, capsys):
    out = tmp_path / "results"
    rc = main(["--sizes", "400:40:8", "--out", str(out), "--dense-budget", "60", "--timeout", "300"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| method |" in printed and "gemm" in printed
    with open(out / "bench.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == COLUMNS
    assert [r["method"] for r in rows] == ["gemm", "fixed_size", "otm", "dense"]
    for row in rows:
        assert row["status"] == "ok", row
        assert (row["N"], row["M"], row["d"]) == ("400", "40", "8")
        assert float(row["seconds"]) > 0 and float(row["peak_rss_mb"]) >= 0
        assert float(row["ratio_to_gemm"]) > 0
    assert float(rows[0]["ratio_to_gemm"]) == 1.0
    for row in rows[1:]:
        assert int(row["selected"]) > 0 and 0 < float(row["ot_distance"]) < 2
        assert 0 < float(row["ot_common"]) < 2 and float(row["vs_dense"]) > 0
        assert re.search(rf"common OT {int(row['selected']):,} x 40 \d+\.\d s", row["note"]), row["note"]
    assert float(rows[3]["vs_dense"]) == 1.0 and rows[0]["vs_dense"] == ""
    # the common solver scores fixed_size's selection as its own result does (same call, same selection)
    assert abs(float(rows[1]["ot_common"]) - float(rows[1]["ot_distance"])) < 1e-6
    assert rows[1]["selected"] == rows[3]["selected"] == "40"  # ratio 0.1 of 400
    md = (out / "bench.md").read_text()
    assert md.count("\n| ") >= 5 and "peak_rss_mb" in md


def test_dense_recipe_skipped_when_it_does_not_fit(tmp_path):
    rows = run_benchmark([(300, 30, 8)], tmp_path, variants=["dense"], dense_max_bytes=1, echo=False)
    assert [(r.method, r.status) for r in rows] == [("dense", "skipped")]
    assert "need" in rows[0].note and rows[0].seconds is None
    text = (tmp_path / "bench.csv").read_text().splitlines()
    assert len(text) == 2 and text[1].startswith("dense,300,30,8,,,,,")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown variant"):
        run_benchmark([(10, 5, 4)], "unused", variants=["gemm", "sparse"], echo=False)
    with pytest.raises(SystemExit):
        main(["--sizes", "10:5"])


def test_generated_features_are_unit_deterministic_memmaps(tmp_path):
    a = generate_features(tmp_path / "a.npy", 40_000, 6, seed=3)
    b = generate_features(tmp_path / "b.npy", 40_000, 6, seed=3)
    t = generate_features(tmp_path / "t.npy", 100, 6, seed=3, modes=(0, 1), proportions=(0.5, 0.5), stream=1)
    xa, xb, xt = (np.load(p, mmap_mode="r") for p in (a, b, t))
    assert xa.dtype == np.float32 and xa.shape == (40_000, 6)
    assert np.array_equal(xa, xb)
    np.testing.assert_allclose(np.linalg.norm(xa, axis=1), 1.0, atol=1e-5)
    # targets live on two of the candidates' modes: each target has a close candidate
    assert np.median((xt @ xa.T).max(axis=1)) > 0.9


def test_dense_recipe_matches_round_robin_and_entropic_ot():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.normal(size=(40, 8)) + 0.5
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    for n in (1, 40, 57, 300):
        sel = dense_layer_selection(x, y, n)
        assert len(sel) == n and np.all(np.diff(sel) > 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rr = tarot.select(x, y, method="round_robin", n=n, whiten_features=False, compute_ot=False,
                              progress=False, layers="rank")
        assert np.array_equal(sel, rr.indices), n
    sel = dense_layer_selection(x, y, 60)
    ours = dense_sinkhorn(x[sel], y)
    assert ours["converged"] and not ours["cut"]
    ref = tarot.entropic_ot(x[sel], y, eps=1e-4, tol=1e-4)
    assert abs(ours["ot_distance"] - ref.value) < 2e-3
    cut = dense_sinkhorn(x[sel], y, deadline=0.0)
    assert cut["cut"] and not cut["converged"]
