"""tarot.estimate: predictions against the committed benchmark, their structure, and the CLI (estimate, --dry-run)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from tarot.app.cli import main
from tarot.estimate import Estimate, estimate_featurization, estimate_for_store, estimate_selection

REPO = Path(__file__).resolve().parents[3]
BENCH = REPO / "benchmarks" / "results" / "bench.csv"
BENCH_FULL = REPO / "benchmarks" / "results" / "bench_full.csv"
FEATURIZE = REPO / "benchmarks" / "results" / "featurize.md"


def _bench_rows() -> list[dict]:
    if not BENCH.is_file():
        pytest.skip("benchmarks/results/bench.csv is not in this checkout")
    rows = list(csv.DictReader(BENCH.open(encoding="utf-8")))
    if BENCH_FULL.is_file():
        rows += list(csv.DictReader(BENCH_FULL.open(encoding="utf-8")))
    return rows


def test_predictions_within_2x_of_the_committed_bench():
    """Every measured fixed_size / otm run of the committed bench (default and --full sizes): total time and peak
    memory within 2x of the prediction made from its sizes and its own GEMM floor (the rate of that machine at that
    size)."""
    rows = _bench_rows()
    gemm = {(r["N"], r["M"], r["d"]): float(r["seconds"]) for r in rows if r["method"] == "gemm" and r["seconds"]}
    checked = 0
    for r in rows:
        if r["method"] not in ("fixed_size", "otm") or r["status"] != "ok":
            continue
        n, m, d = int(r["N"]), int(r["M"]), int(r["d"])
        rate = 2.0 * n * m * d / gemm[(r["N"], r["M"], r["d"])] / 1e9
        # runs recorded before measure_continuous existed measured the continuous weights (a third solve)
        continuous = "never" if "continuous weights: not measured" in r["note"] else "always"
        est = estimate_selection(n, m, d, method=r["method"], ratio=0.1 if r["method"] == "fixed_size" else "auto",
                                 weighting=True, measure_continuous=continuous, whiten=False, gflops=rate)
        seconds, peak = float(r["seconds"]), float(r["peak_rss_mb"])
        assert 0.5 <= est.seconds / seconds <= 2.0, (r["method"], n, m, est.seconds, seconds)
        assert 0.5 <= est.peak_mb / peak <= 2.0, (r["method"], n, m, est.peak_mb, peak)
        # the neighbour-list stage on its own, where the note records it
        note = dict(re.findall(r"(\w+) ([\d.]+) s", r["note"]))
        if "select" in note and float(note["select"]) > 1.0:
            assert 0.5 <= est.stage("select").seconds / float(note["select"]) <= 2.0, (r["method"], n, m)
        checked += 1
    assert checked >= 4


def test_featurization_projection_against_the_committed_featurize_bench():
    """The projection rows of benchmarks/results/featurize.md (per batch) within 2x of the model at the
    reference GEMM rate: the small CNN (p = 242,122, k = 1,024) and the LoRA size (p = 460,800, k = 8,192); and the
    CNN's per-sample gradients given its forward flops."""
    if not FEATURIZE.is_file():
        pytest.skip("benchmarks/results/featurize.md is not in this checkout")
    text = FEATURIZE.read_text(encoding="utf-8")

    def measured(label: str) -> float:
        m = re.search(r"\| " + re.escape(label) + r"[^|]*\| ([\d.]+) \|", text)
        assert m, label
        return float(m.group(1))

    cases = [  # (row, p, k, projector, cache, batch): the LoRA-size rows project batches of 8
        ("projection, sjlt", 242_122, 1024, "sjlt", 2**30, 64),
        ("LoRA-size projection, sjlt", 460_800, 8192, "sjlt", 0, 8),
        ("LoRA-size projection, dense (regenerated)", 460_800, 8192, "dense", 0, 8),
    ]
    for label, p, k, proj, cache, batch in cases:
        est = estimate_featurization(batch, p, k, projector=proj, cache_bytes=cache, batch_size=batch,
                                     gflops=150.0)
        got = est.stage("projection").seconds
        assert 0.5 <= got / measured(label) <= 2.0, (label, got, measured(label))
    # per-sample gradients of the bench's small CNN: four 3x3 convolutions, 39.5 MFLOP per forward pass
    conv_macs = 32 * 32 * 32 * 3 * 9 + 16 * 16 * 64 * 32 * 9 + 8 * 8 * 128 * 64 * 9 + 8 * 8 * 128 * 128 * 9
    est = estimate_featurization(64, 242_122, 1024, forward_flops=2.0 * conv_macs, gflops=150.0)
    got = est.stage("gradients").seconds
    assert 0.5 <= got / measured("per-sample gradients, vmap") <= 2.0, got


def test_sparse_threshold_matches_the_solver():
    from tarot.estimate import SPARSE_PAIRS
    from tarot.ot import SPARSE_MIN_ENTRIES

    assert SPARSE_PAIRS == SPARSE_MIN_ENTRIES


def test_structure_and_scaling():
    base = estimate_selection(100_000, 2_000, 512, ratio=0.1, gflops=100.0)
    assert [s.stage for s in base.stages] == ["whiten", "select", "ot_and_weights"]
    assert base.seconds == pytest.approx(sum(s.seconds for s in base.stages))
    assert base.peak_mb == max(s.peak_mb for s in base.stages)
    assert base.sizes["budget"] == 10_000
    weighted = estimate_selection(100_000, 2_000, 512, ratio=0.1, weighting=True, gflops=100.0)
    assert weighted.stage("ot_and_weights").seconds == pytest.approx(2 * base.stage("ot_and_weights").seconds)
    both = estimate_selection(100_000, 2_000, 512, ratio=0.1, weighting=True, measure_continuous="always", gflops=100.0)
    assert both.stage("ot_and_weights").seconds == pytest.approx(3 * base.stage("ot_and_weights").seconds)
    small = estimate_selection(1_000, 200, 512, ratio=0.1, weighting=True, gflops=100.0)  # 20,000 pairs: measured
    assert "3 OT solves" in small.stage("ot_and_weights").basis
    bigger = estimate_selection(400_000, 2_000, 512, ratio=0.1, gflops=100.0)
    assert bigger.stage("select").seconds == pytest.approx(4 * base.stage("select").seconds)
    assert bigger.peak_mb > base.peak_mb
    faster = estimate_selection(100_000, 2_000, 512, ratio=0.1, gflops=200.0)
    assert faster.stage("select").seconds == pytest.approx(base.stage("select").seconds / 2)
    no_white = estimate_selection(100_000, 2_000, 512, ratio=0.1, whiten=False, gflops=100.0)
    assert no_white.stage("whiten").seconds < base.stage("whiten").seconds
    assert estimate_selection(100_000, 2_000, 512, n=123, gflops=100.0).sizes["budget"] == 123
    assert estimate_selection(100_000, 2_000, 512, method="otm", gflops=100.0).sizes["budget"] == 1_000
    assert estimate_selection(10, 2, 4, method="random", ratio=0.5, gflops=100.0).stage("select").seconds == 0
    with pytest.raises(ValueError, match="unknown method"):
        estimate_selection(10, 2, 4, method="nope", gflops=100.0)
    with pytest.raises(ValueError, match="positive"):
        estimate_selection(0, 2, 4, gflops=100.0)


def test_featurization_model():
    dense = estimate_featurization(10_000, 100_000, 1024, gflops=100.0)
    big = estimate_featurization(10_000, 100_000, 1024, cache_bytes=0, gflops=100.0)
    assert big.stage("projection").seconds > dense.stage("projection").seconds  # regenerated every batch
    sjlt = estimate_featurization(10_000, 100_000, 1024, projector="sjlt", gflops=100.0)
    assert sjlt.stage("projection").seconds < dense.stage("projection").seconds
    two = estimate_featurization(10_000, 100_000, 1024, checkpoints=2, gflops=100.0)
    assert two.seconds == pytest.approx(2 * dense.seconds, rel=0.05)
    heavy = estimate_featurization(10_000, 100_000, 1024, forward_flops=1e9, gflops=100.0)
    assert heavy.stage("gradients").seconds > dense.stage("gradients").seconds


def test_table_and_json_round_trip():
    est = estimate_selection(1_000, 100, 64, ratio=0.1, gflops=50.0)
    table = est.table()
    for word in ("whiten", "select", "ot_and_weights", "total", "N=1,000"):
        assert word in table
    doc = json.loads(est.to_json())
    assert doc["seconds"] == pytest.approx(est.seconds) and len(doc["stages"]) == 3
    assert isinstance(est, Estimate)
    with pytest.raises(KeyError, match="no stage"):
        est.stage("train")


def _store(tmp_path: Path):
    from tarot.features.store import FeatureStore

    rng = np.random.default_rng(0)
    return FeatureStore.from_arrays(tmp_path / "store", {"candidate": rng.normal(size=(40, 8)),
                                                         "target": rng.normal(size=(6, 8))})


def test_estimate_for_store_and_missing_split(tmp_path):
    store = _store(tmp_path)
    est = estimate_for_store(store, {"method": "fixed_size", "ratio": 0.25}, gflops=50.0)
    assert (est.sizes["N"], est.sizes["M"], est.sizes["d"], est.sizes["budget"]) == (40, 6, 8, 10)

    from tarot.errors import MissingSplitError
    from tarot.features.store import FeatureStore

    only = FeatureStore.from_arrays(tmp_path / "only", {"candidate": np.ones((3, 8))})
    with pytest.raises(MissingSplitError, match="no split 'target'"):
        estimate_for_store(only, {"method": "otm"})


def test_cli_estimate(capsys):
    assert main(["estimate", "--candidates", "50000", "--targets", "1000", "--dim", "256", "--ratio", "0.1",
                 "--gflops", "100", "--samples", "1000", "--params", "5000", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["selection"]["sizes"]["budget"] == 5000 and doc["featurization"]["sizes"]["proj_dim"] == 256
    assert main(["estimate", "--candidates", "50000", "--targets", "1000", "--dim", "256", "--gflops", "100"]) == 0
    assert "ot_and_weights" in capsys.readouterr().out
    assert main(["estimate", "--candidates", "5"]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(["estimate"]) == 2
    assert "nothing to estimate" in capsys.readouterr().err
    assert main(["estimate", "--samples", "10"]) == 2


def test_select_dry_run_writes_nothing(tmp_path, capsys):
    _store(tmp_path)
    out = tmp_path / "result"
    assert main(["select", "--store", str(tmp_path / "store"), "--method", "fixed_size", "--ratio", "0.25",
                 "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "ot_and_weights" in text and "N=40" in text
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name != "store"]
