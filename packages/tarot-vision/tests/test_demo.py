from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from tarot_vision.cli import main
from tarot_vision.cls_data import load_digits_images
from tarot_vision.config import resolve_config
from tarot_vision.demo import apply_shift, build_scenario, comparisons, method_specs, verdict


def test_shifts_are_exact():
    x = np.arange(2 * 1 * 8 * 8, dtype=np.uint8).reshape(2, 1, 8, 8)
    rng = np.random.default_rng(0)
    out = apply_shift(x, np.array(["inverted", "rotated"]), rng, 0.3)
    np.testing.assert_array_equal(out[0], 255 - x[0])
    np.testing.assert_array_equal(out[1, 0], np.rot90(x[1, 0]))
    noisy = apply_shift(x, np.array(["noisy", "clean"]), rng, 0.3)
    assert not np.array_equal(noisy[0], x[0]) and np.array_equal(noisy[1], x[1])
    with pytest.raises(ValueError, match="unknown shift 'blurred'"):
        apply_shift(x, np.array(["blurred", "clean"]), rng, 0.3)


def test_scenario_is_heterogeneous_and_disjoint():
    images, labels = load_digits_images()
    sc = resolve_config("demo")["scenario"]
    scn = build_scenario(images, labels, sc, seed=0)
    comp = {s: scn.pool_sources.count(s) for s in set(scn.pool_sources)}
    assert set(comp) == {"clean", "noisy", "rotated", "inverted", "other_classes"}
    # other_classes are exactly the non-target classes
    pool_y = scn.pool.y.numpy()
    assert all((s == "other_classes") == (y not in sc["target_classes"]) for s, y in zip(scn.pool_sources, pool_y))
    assert set(scn.target.y.tolist()) <= set(sc["target_classes"]) and len(scn.target) == sc["target_size"]
    assert set(scn.target_sources) == {"inverted", "rotated"} and set(scn.test_sources) == {"inverted", "rotated"}

    # no image is both a candidate and a target/test image (compare the un-shifted originals)
    def originals(ds, sources):
        x = ds.x.numpy()
        out = []
        for img, s in zip(x, sources):
            u8 = np.rint((img + 1.0) * 127.5).astype(np.int64)
            if s == "inverted":
                u8 = 255 - u8
            elif s == "rotated":
                u8 = np.rot90(u8, k=-1, axes=(1, 2))
            out.append(u8.tobytes())
        return set(out)

    clean_pool = originals(scn.pool, [s if s in ("inverted", "rotated", "clean") else "skip" for s in scn.pool_sources])
    assert not clean_pool & originals(scn.target, scn.target_sources)
    assert not originals(scn.test, scn.test_sources) & originals(scn.target, scn.target_sources)
    again = build_scenario(images, labels, sc, seed=0)
    assert np.array_equal(again.pool.x.numpy(), scn.pool.x.numpy())


def test_verdict_is_computed_against_every_baseline():
    rng = np.random.default_rng(0)

    def row(label, method, acc):
        correct = (rng.random(400) < acc).astype(float)
        return {"label": label, "method": method, "correct": correct.tolist()}

    def seeds(accs):
        return [{"rows": [row(lb, m, a) for (lb, m), a in zip(names, accs)]} for _ in range(3)]

    names = [("random 20%", "random"), ("topk_mean 20%", "topk_mean"), ("TAROT fixed_size 20%", "fixed_size"),
             ("target set only", "target_only")]
    win = comparisons(seeds([0.5, 0.6, 0.9, 0.55]))
    assert win["winner"] == "TAROT fixed_size 20%" and win["text"].startswith("TAROT wins on held-out target")
    lose = comparisons(seeds([0.5, 0.6, 0.9, 0.95]))  # the target set alone is better
    assert lose["winner"] is None and "worse than target set only" in lose["text"]
    keys = ("label", "method", "budget", "ratio_mean", "acc_mean", "acc_std")
    table = [dict(zip(keys, ("TAROT otm (auto)", "otm", "auto", 0.31, 0.8, 0.01))),
             dict(zip(keys, ("random 20%", "random", 0.2, 0.2, 0.7, 0.02)))]
    text = verdict(table, lose)
    assert text.startswith("TAROT does not win") and "OTM chose 31% of the pool" in text
    assert "best other row: random 20% (0.700 ± 0.020)" in text


def test_unknown_baseline_is_refused():
    cfg = resolve_config("demo", overrides=["select.baselines=[random,dsdm]"])
    with pytest.raises(ValueError, match=r"select.baselines: unknown selector\(s\) \['dsdm'\]"):
        method_specs(cfg)


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--set", "dataset=digits"]) == 0
    printed = capsys.readouterr().out
    assert "verdict:" in printed and "report:" in printed
    assert (out / "COMPLETE").is_file() and (out / "report" / "index.html").is_file()
    doc = json.loads((out / "results.json").read_text())
    assert doc["dataset"] == "digits" and doc["seeds"] == [0, 1]
    labels = [r["label"] for r in doc["table"]]
    assert labels[:4] == ["random 20%", "random 20% + targets", "topk_mean 20%", "topk_mean 20% + targets"]
    assert {"less 20%", "round_robin 20%", "tsds 20%", "tsds 20% + targets"} <= set(labels)
    tsds = next(r for r in doc["table"] if r["label"] == "tsds 20%")
    assert tsds["method"] == "tsds" and tsds["budget"] == 0.2
    assert {"TAROT fixed_size 5%", "TAROT fixed_size 20%", "TAROT fixed_size 50%", "TAROT otm (auto)"} <= set(labels)
    assert {"random 20% + targets", "TAROT otm (auto) + targets", "full pool (100%)", "target set only"} <= set(labels)
    assert {"embeddings topk_mean 20%", "embeddings fixed_size 20%", "embeddings otm (auto)"} <= set(labels)
    emb = next(r for r in doc["table"] if r["label"] == "embeddings fixed_size 20%")
    assert emb["features"] == "embeddings" and emb["method"] == "fixed_size"
    comp = doc["comparisons"]
    tarot_rows = {lb for lb in labels if lb.startswith("TAROT")}
    assert {c["method"] for c in comp["comparisons"]} == tarot_rows
    assert {c["baseline"] for c in comp["comparisons"]} == set(labels) - tarot_rows
    assert doc["verdict"].startswith(("TAROT wins on held-out target accuracy", "TAROT does not win on held-out"))
    for r in doc["table"]:
        assert len(r["acc_per_seed"]) == 2 and 0.0 <= r["acc_mean"] <= 1.0
    fs20 = next(r for r in doc["table"] if r["label"] == "TAROT fixed_size 20%")
    rnd = doc["table"][0]
    assert fs20["budget"] == rnd["budget"] == 0.2 and abs(fs20["n_mean"] - rnd["n_mean"]) <= 1
    html = (out / "report" / "index.html").read_text()
    assert "held-out target accuracy" in html and "TAROT fixed_size 20%" in html and "data:image/png;base64" in html
    assert html.index("Does TAROT win?") < html.index("<img")  # the verdict leads the report
    section = html.split(">What was selected</h2>")[1].split("<h2")[0]
    assert "TAROT fixed_size 20%" in section and "random baseline" in section
    assert section.count("data:image/png;base64,") == 1 and len(section) > 20_000  # the picture itself
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["config"]["seeds"] == [0, 1] and resolved["config"]["dataset"] == "digits"
    # rerunning into the same folder is allowed; a foreign non-empty folder is refused with one line
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["demo", "--quick", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a tarot-vision demo folder" in err and "\n" not in err
    assert (foreign / "notes.txt").read_text() == "mine"
