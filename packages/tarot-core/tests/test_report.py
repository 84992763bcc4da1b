"""Tests of tarot.app.report.write_report on hand-built SelectionResult objects."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tarot.app.report import html_table, write_report
from tarot.result import SelectionResult


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _otm_folds() -> list[dict]:
    return [
        {"fold": 0, "depths": [1, 2, 3, 4], "sizes": [10, 18, 25, 30], "values": [0.9, 0.8, 0.75, 0.77],
         "best_depth": 3},
        {"fold": 1, "depths": [1, 2, 3], "sizes": [11, 19, 26], "values": [0.95, 0.82, 0.85], "best_depth": 2},
    ]


@pytest.fixture()
def data():
    rng = np.random.default_rng(0)
    n, m, d = 300, 60, 8
    cand = _unit(rng.normal(size=(n, d))).astype(np.float32)
    tgt = _unit(rng.normal(size=(m, d)) + 1.0).astype(np.float32)
    idx = np.sort(rng.choice(n, size=40, replace=False))
    sources = ["web" if i % 3 else "<books & co>" for i in range(n)]
    return cand, tgt, idx, sources


def _otm_result(idx: np.ndarray, sources: list[str], n: int = 300) -> SelectionResult:
    weights = np.arange(len(idx)) % 3 + 1
    return SelectionResult(
        indices=idx,
        method="otm",
        n_candidates=n,
        ratio=len(idx) / n,
        ot_distance=0.81,
        weights=weights,
        probabilities=weights / weights.sum(),
        config={"method": "otm", "ratio": "auto", "otm": {"folds": 2, "seed": 42}, "weighting": {"beta": 0.5}},
        diagnostics={"otm": {"folds": _otm_folds(), "ratio": len(idx) / n}, "solver": {"iterations": 120}},
        candidate_sources=sources,
    )


def test_full_report_writes_all_plots_and_escapes(tmp_path, data):
    cand, tgt, idx, sources = data
    res = _otm_result(idx, sources)
    extra = [("Comparison <table>", html_table([["otm", 40, 0.81]], ["method", "selected", "OT"]))]
    page = write_report(res, tmp_path / "rep", candidates=cand, targets=tgt, title="My <title>", extra_sections=extra,
                        lead_sections=[("Verdict", "<p>first</p>")])
    out = tmp_path / "rep"
    assert page == out / "index.html"
    text = page.read_text(encoding="utf-8")
    for png in ("otm_curves.png", "map.png", "composition.png", "weights.png"):
        assert (out / png).stat().st_size > 1000
        assert f'src="{png}"' in text
    # every src is relative and the page is self-contained
    assert "http" not in text.split("<body>")[1]
    assert "My &lt;title&gt;" in text and "My <title>" not in text
    assert "&lt;books &amp; co&gt;" in text
    assert "Comparison &lt;table&gt;" in text
    assert "<th>method</th>" in text  # extra html inserted as html
    body = text.split("<body>")[1]
    assert body.index("<p>first</p>") < body.index("Summary</h2>") < body.index("Comparison &lt;table&gt;</h2>")
    # the 'otm' fold lists are plotted, scalars appear in the diagnostics table
    assert "otm.ratio" in text and "solver.iterations" in text and "otm.folds" in text  # config key otm.folds
    assert "scores.png" not in text and "No score histogram" in text
    meta = json.loads((out / "report.json").read_text())
    assert meta["summary"]["selected"] == 40
    assert meta["summary"]["composition"] == res.composition()
    assert meta["sections"]["2-D map"]["whitened"] is True  # 360 plotted rows >= 2 * 8 dims: whitened
    assert meta["sections"]["OTM: distance vs depth"]["folds"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_report_never_modifies_result(tmp_path, data):
    cand, tgt, idx, sources = data
    res = _otm_result(idx, sources)
    before = {k: getattr(res, k).tobytes() for k in ("indices", "weights", "probabilities")}
    cand_before = cand.tobytes()
    write_report(res, tmp_path / "r", candidates=cand, targets=tgt)
    assert res.weights.tobytes() == before["weights"]
    assert res.indices.tobytes() == before["indices"]
    assert res.probabilities.tobytes() == before["probabilities"]
    assert not res.weights.flags.writeable
    assert cand.tobytes() == cand_before
    # saved and reloaded: same bytes after a second report
    res.save(tmp_path / "saved")
    loaded = SelectionResult.load(tmp_path / "saved")
    write_report(loaded, tmp_path / "r2", candidates=cand, targets=tgt)
    assert loaded.weights.tobytes() == before["weights"]


def test_missing_sections_are_noted_not_crashed(tmp_path):
    res = SelectionResult(indices=np.array([1, 3]), method="random", n_candidates=5, ratio=0.4)
    page = write_report(res, tmp_path / "bare")
    text = page.read_text()
    assert "No OTM curves" in text
    assert "No 2-D map" in text
    assert "No composition" in text
    assert "No score histogram" in text and "No weights histogram" in text
    assert "records no configuration" in text
    assert not list((tmp_path / "bare").glob("*.png"))


def test_malformed_otm_and_bad_shapes_are_noted(tmp_path):
    res = SelectionResult(
        indices=np.array([0, 2]), method="otm", n_candidates=4, ratio=0.5,
        diagnostics={"otm": {"folds": [{"fold": 0, "depths": [], "values": []}]}},
        candidate_sources=["a", "b"] * 2,
    )
    text = write_report(res, tmp_path / "m", candidates=np.ones((7, 3))).read_text()
    assert "hold no (depth, value) points" in text
    assert "expected (4, d)" in text
    assert (tmp_path / "m" / "composition.png").exists()


def test_scores_histogram_and_subsampled_map(tmp_path):
    rng = np.random.default_rng(1)
    n, m = 7000, 400
    cand = rng.normal(size=(n, 6))
    tgt = rng.normal(size=(m, 6))
    scores = rng.normal(size=n)
    idx = np.sort(np.argsort(-scores)[:50])
    res = SelectionResult(indices=idx, method="topk_mean", n_candidates=n, ratio=50 / n, scores=scores)
    write_report(res, tmp_path / "s", candidates=cand, targets=tgt, max_points=600, seed=3)
    meta = json.loads((tmp_path / "s" / "report.json").read_text())
    assert meta["sections"]["2-D map"]["points"] == 600
    assert meta["sections"]["Scores and weights"]["scores_plot"] == "scores.png"
    assert (tmp_path / "s" / "scores.png").exists()
    assert res.scores.tobytes() == scores.astype(np.float64).tobytes()


def test_store_like_object_and_tsne(tmp_path, data):
    pytest.importorskip("sklearn")
    cand, tgt, idx, sources = data

    class FakeStore:
        def features(self, split):
            return {"candidate": cand, "target": tgt}[split]

        def sources(self, split):
            return sources

    res = SelectionResult(indices=idx, method="fixed_size", n_candidates=len(cand), ratio=len(idx) / len(cand),
                          config={"whiten": False})
    write_report(res, tmp_path / "t", store=FakeStore(), embedding="tsne", max_points=200)
    meta = json.loads((tmp_path / "t" / "report.json").read_text())
    assert meta["sections"]["2-D map"]["embedding"] == "t-SNE"
    assert meta["sections"]["2-D map"]["whitened"] is False  # the selection did not whiten, neither does the map
    assert "did not whiten" in (tmp_path / "t" / "index.html").read_text()
    assert meta["sections"]["Source composition"]["selected"] == res.composition(sources)


def test_rewrite_removes_stale_plots_and_rejects_bad_input(tmp_path, data):
    cand, tgt, idx, sources = data
    out = tmp_path / "o"
    write_report(_otm_result(idx, sources), out, candidates=cand, targets=tgt)
    assert (out / "otm_curves.png").exists()
    keep = out / "notes.txt"
    keep.write_text("user file")
    plain = SelectionResult(indices=idx, method="random", n_candidates=len(cand), ratio=0.1)
    write_report(plain, out)
    assert not (out / "otm_curves.png").exists() and keep.exists()
    with pytest.raises(ValueError, match="embedding"):
        write_report(plain, out, embedding="umap")
    with pytest.raises(ValueError, match="heading, html"):
        write_report(plain, tmp_path / "x", extra_sections=["just a string"])
    assert not (tmp_path / "x").exists()


def test_incomplete_store_is_noted(tmp_path):
    from tarot.features.store import StoreError

    class IncompleteStore:
        def features(self, split):
            raise StoreError(f"feature store x is incomplete (split {split!r})")

        def sources(self, split):
            return ["a", "b", "a", "b"]

    res = SelectionResult(indices=np.array([0, 1]), method="random", n_candidates=4, ratio=0.5)
    text = write_report(res, tmp_path / "inc", store=IncompleteStore()).read_text()
    assert "candidate features are unavailable" in text and "incomplete" in text
    assert (tmp_path / "inc" / "composition.png").exists()


def test_attachments_are_copied_and_checked_first(tmp_path, data):
    cand, tgt, idx, sources = data
    res = _otm_result(idx, sources)
    pic = tmp_path / "trajectories.png"
    pic.write_bytes(b"\x89PNG fake bytes")
    section = ("Trajectories", '<img src="trajectories.png" alt="x">')
    page = write_report(res, tmp_path / "rep", candidates=cand, targets=tgt, lead_sections=[section],
                        attachments={"trajectories.png": pic})
    assert (tmp_path / "rep" / "trajectories.png").read_bytes() == pic.read_bytes()
    assert 'src="trajectories.png"' in page.read_text(encoding="utf-8")
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["attachments"] == ["trajectories.png"]
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_report(res, tmp_path / "rep2", candidates=cand, targets=tgt,
                     attachments={"a.png": tmp_path / "missing.png"})
    with pytest.raises(ValueError, match="plain file name"):
        write_report(res, tmp_path / "rep2", candidates=cand, targets=tgt, attachments={"../a.png": pic})
    assert not (tmp_path / "rep2").exists()  # refused before anything was written


def test_examples_by_source_orders_each_source_by_score():
    from tarot.app.report import examples_by_source

    srcs = ["a", "b", "a", "b", "a", "c"]
    res = SelectionResult(indices=np.array([0, 1, 2, 4]), method="fixed_size", n_candidates=6, ratio=4 / 6,
                          candidate_sources=srcs)
    scores = np.array([0.1, 0.5, 0.9, 0.0, 0.9, 5.0])
    assert examples_by_source(res, scores, per_source=2) == {"a": [2, 4], "b": [1]}  # tie 2/4: lower index first
    assert examples_by_source(res) == {"a": [0, 2, 4], "b": [1]}  # no scores: index order
    assert examples_by_source(res, sources=list("xxyyzz"), per_source=5) == {"x": [0, 1], "y": [2], "z": [4]}
    kept = SelectionResult(indices=np.array([3, 5]), method="topk_mean", n_candidates=6, ratio=1 / 3, scores=scores)
    assert examples_by_source(kept) == {"all": [5, 3]}  # the selector's own scores
    with pytest.raises(ValueError, match="scores has shape"):
        examples_by_source(res, np.ones(3))
