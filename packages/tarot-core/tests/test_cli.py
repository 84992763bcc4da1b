"""Tests of the ``tarot`` command line (tarot.app.cli) and of the demo it runs (tarot.app.demo)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tarot
import yaml
from _tiny_models import CELoss, Samples, TinyNet
from tarot import FeatureStore, GradientFeaturizer, SelectionResult, featurize_to_store
from tarot.app.cli import build_parser, main
from tarot.selectors import SELECTORS

FAST = ["--set", "eps=0.05"]  # a coarse ε keeps the OT solves of these tiny problems instant


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@pytest.fixture()
def store(tmp_path):
    mix = tarot.make_mixture(n_per_mode=20, n_off_target=40, n_targets=20, dim=4, seed=0)
    return FeatureStore.from_arrays(
        tmp_path / "store", {"candidate": mix.candidates, "target": mix.targets},
        sources={"candidate": mix.candidate_sources},
    )


def _run(capsys, argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_texts_explain_every_command_and_method(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    top = capsys.readouterr().out
    for cmd in ("select", "inspect", "report", "demo", "merge"):
        assert cmd in top
    with pytest.raises(SystemExit):
        main(["select", "--help"])
    text = capsys.readouterr().out
    for method in SELECTORS:
        assert f"  {method} " in text
    for option in ("--ratio", "--n", "--weighting", "--no-weighting", "--beta", "--merge-targets", "--config", "--set"):
        assert option in text
    assert "Algorithm 1" in text and "Algorithm 2" in text
    for cmd in ("inspect", "report", "demo", "merge"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert len(capsys.readouterr().out.splitlines()) > 5


def test_select_inspect_report_round_trip(tmp_path, capsys, store):
    out = tmp_path / "sel"
    rc, text, err = _run(capsys, ["select", "--store", store.path,
                                  "--method", "fixed_size", "--ratio", "0.2", "--weighting",
                                  "--beta", "0.7", *FAST, "--out", out])
    assert rc == 0, err
    res = SelectionResult.load(out)
    assert res.method == "fixed_size" and res.size == 20 and res.weights is not None
    assert "selected" in text and "20" in text and "mode0" in text and str(out) in text
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["method"] == "fixed_size" and cfg["eps"] == 0.05 and cfg["beta"] == 0.7 and cfg["weighting"] is True
    assert cfg["store"] == str(store.path.resolve())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    rc, text, _ = _run(capsys, ["inspect", out])
    assert rc == 0 and "selection result" in text and "fixed_size" in text
    for label, count in res.composition().items():
        assert f"{label}: {count}" in text

    rc, text, _ = _run(capsys, ["inspect", out, "--json"])
    assert json.loads(text)["summary"]["selected"] == 20

    rep = tmp_path / "rep"
    rc, text, err = _run(capsys, ["report", out, "--store", store.path, "--out", rep])
    assert rc == 0, err
    page = (rep / "index.html").read_text()
    assert 'src="map.png"' in page and 'src="composition.png"' in page and 'src="weights.png"' in page
    assert SelectionResult.load(out).weights.tobytes() == res.weights.tobytes()


def test_config_file_flags_and_set_precedence(tmp_path, capsys, store):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ratio: 0.5\neps: 0.05\nfill_rounds: 2\nseed: 3\n")
    out = tmp_path / "sel"
    rc, _, err = _run(capsys, ["select", "--store", store.path, "--method", "fixed_size", "--config", cfg, "--n", "7",
                               "--set", "fill_rounds=1", "--out", out])
    assert rc == 0, err
    res = SelectionResult.load(out)
    assert res.size == 7  # --n replaces the config's ratio
    assert res.config["selector_options"]["fill_rounds"] == 1  # --set wins over the file
    assert res.config["seed"] == 3 and res.config["eps"] == 0.05  # file values kept
    # rerunning into the same result directory replaces the result and its config, and keeps what select did not
    # write there (a report, say)
    (out / "report").mkdir()
    (out / "report" / "index.html").write_text("<p>kept</p>")
    rc, _, err = _run(capsys, ["select", "--store", store.path,
                               "--method", "topk_mean", "--n", "5", *FAST, "--out", out])
    assert rc == 0, err
    assert SelectionResult.load(out).method == "topk_mean"
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "topk_mean"
    assert (out / "report" / "index.html").read_text() == "<p>kept</p>"
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")) == []


def test_otm_with_auto_ratio(tmp_path, capsys, store):
    out = tmp_path / "otm"
    rc, text, err = _run(capsys, ["select", "--store", store.path,
                                  "--method", "otm", "--ratio", "auto", "--weighting", *FAST,
                                  "--out", out])
    assert rc == 0, err
    res = SelectionResult.load(out)
    assert res.method == "otm" and res.diagnostics["otm"]["folds"]
    rc, text, _ = _run(capsys, ["inspect", out])
    assert "otm kept depths per fold" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["select", "--store", "{missing}", "--method", "random", "--n", "3"], "no such feature store"),
        (["select", "--store", "{store}", "--method", "random", "--n", "3", "--set", "bogus=1"],
         "unknown option(s) bogus"),
        (["select", "--store", "{store}", "--method", "fixed_size", "--ratio", "auto"],
         "only available with method='otm'"),
        (["select", "--store", "{store}", "--method", "fixed_size", "--n", "5", "--set", "fill_rounds=abc"],
         "option fill_rounds of method 'fixed_size': cannot read 'abc' as int"),
        (["select", "--store", "{store}", "--method", "fixed_size"], "needs a size"),
        (["select", "--store", "{store}", "--method", "random", "--n", "5000"], "outside [1, 100]"),
        (["select", "--store", "{store}", "--method", "random", "--n", "3", "--config", "{badyaml}"], "not valid YAML"),
        (["select", "--store", "{store}", "--method", "random", "--n", "3", "--config", "{listyaml}"],
         "expected a mapping"),
        (["select", "--store", "{store}", "--method", "random", "--n", "3", "--config", "{missing}"],
         "config file not found"),
        (["select", "--store", "{notargets}", "--method", "random", "--n", "3"], "has no split 'target'"),
        (["select", "--store", "{nanstore}", "--method", "random", "--n", "3"], "target features of store"),
        (["select", "--store", "{truncstore}", "--method", "random", "--n", "3"], "candidate.npy: not a readable"),
        (["inspect", "{truncstore}"], "candidate.npy: not a readable .npy array"),
        (["report", "{missing}"], "missing"),
        (["inspect", "{missing}"], "no such file"),
        (["inspect", "{tmp}"], "is not a feature store"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_leave_nothing(tmp_path, capsys, store, argv, message):
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    subs = {"{missing}": tmp_path / "nope", "{store}": store.path, "{badyaml}": tmp_path / "bad.yaml",
            "{listyaml}": tmp_path / "list.yaml", "{tmp}": tmp_path}
    if {"{notargets}", "{nanstore}", "{truncstore}"} & set(argv):
        from tarot import FeatureStore

        rows = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
        stores = tmp_path / "stores"
        subs["{notargets}"] = FeatureStore.from_arrays(stores / "no_targets", {"candidate": rows}).path
        nan_store = FeatureStore.from_arrays(stores / "nan", {"candidate": rows, "target": rows[:5]})
        arr = np.load(nan_store.path / nan_store._split("target")["file"], mmap_mode="r+")
        arr[3, 1] = np.nan  # corrupted after writing (from_arrays itself refuses NaNs)
        arr.flush()
        del arr
        subs["{nanstore}"] = nan_store.path
        cut = FeatureStore.from_arrays(stores / "truncated", {"candidate": rows, "target": rows[:5]})
        data = cut.path / cut._split("candidate")["file"]
        data.write_bytes(data.read_bytes()[:200])  # a copy or a download that stopped early
        subs["{truncstore}"] = cut.path
    argv = [str(subs.get(a, a)) for a in argv]
    out = tmp_path / "out"
    if argv[0] in ("select", "report"):
        argv += ["--out", str(out)]
    rc, _, err = _run(capsys, argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tarot {argv[0]}: error: ")
    assert message in lines[0]
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    if "{nanstore}" in subs and str(subs["{nanstore}"]) in argv:
        assert "row 3 has non-finite values" in lines[0]


def test_tarot_follows_the_cli_convention():
    from tarot.app.conventions import check_convention

    settings = {"--config", "--set", "--print-config", "--no-progress"}
    needs = {"select": {"--store", "--out", *settings}, "report": {"--store", "--out"}, "demo": {"--out"},
             "merge": {"--out"}, "inspect": set()}
    assert check_convention(build_parser(), needs) == []


def test_the_old_positional_store_still_works_with_a_warning(tmp_path, capsys, store):
    rc, _, err = _run(capsys, ["select", store.path, "--method", "random", "--n", "3", "--out", tmp_path / "o"])
    assert rc == 0 and "warning: the positional STORE is deprecated" in err and "use --store DIR" in err
    rc, _, err = _run(capsys, ["select", store.path, "--store", store.path, "--method", "random", "--n", "3",
                               "--out", tmp_path / "o2"])
    assert rc == 2 and "give the store once" in err


def test_print_config_shows_the_resolved_options_and_runs_nothing(tmp_path, capsys, store):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: otm\nratio: auto\npatience: 1\n")
    rc, text, _ = _run(capsys, ["select", "--store", store.path, "--config", cfg, "--set", "patience=3",
                                "--print-config", "--out", tmp_path / "o"])
    printed = yaml.safe_load(text)
    assert rc == 0 and printed["method"] == "otm" and printed["patience"] == 3 and printed["ratio"] == "auto"
    assert not (tmp_path / "o").exists()


def test_select_help_lists_every_selector_option_with_its_help(capsys):
    from tarot.options import SELECTOR_OPTIONS

    with pytest.raises(SystemExit):
        main(["select", "--help"])
    text = capsys.readouterr().out
    for cls in SELECTOR_OPTIONS.values():
        for name in cls.specs():
            assert f"  {name} (" in text, name
    assert "--no-progress" in text and "--print-config" in text


def test_select_refuses_foreign_output_directory(tmp_path, capsys, store):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rc, _, err = _run(capsys, ["select", "--store", store.path, "--method", "random", "--n", "3", "--out", out])
    assert rc == 2 and "not a selection result directory" in err
    assert (out / "keep.txt").read_text() == "x" and len(list(out.iterdir())) == 1


def test_argparse_errors_exit_2(capsys, store):
    for argv in (["select", "--store", str(store.path), "--method", "random", "--ratio", "1.5", "--out", "x"],
                 ["select", "--store", str(store.path), "--method", "nope", "--n", "3", "--out", "x"],
                 ["select", "--store", str(store.path), "--method", "random", "--n", "3", "--ratio", "0.1",
                  "--out", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "usage:" in capsys.readouterr().err


def test_console_entry_point_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tarot.app.cli", "select", "--store", str(tmp_path / "none"), "--method", "random",
         "--n", "2", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"tarot select: error: {tmp_path / 'none'}: no such feature store "
                                                "directory"]
    assert not (tmp_path / "o").exists()


def _featurize(tmp_path, **kwargs):
    feat = GradientFeaturizer(TinyNet(), CELoss(), proj_dim=8, seed=0)
    data = {"candidate": Samples(10, seed=1, fail_at=kwargs.pop("fail_at", None)), "target": Samples(6, seed=2)}
    sources = {"candidate": ["a" if i % 2 else "b" for i in range(10)]}
    return featurize_to_store(feat, data, kwargs.pop("path"), None, batch_size=3, progress=False, sources=sources,
                              **kwargs)


def test_inspect_feature_stores_complete_and_incomplete(tmp_path, capsys):
    _featurize(tmp_path, path=tmp_path / "full")
    rc, text, _ = _run(capsys, ["inspect", tmp_path / "full"])
    assert rc == 0
    assert "feature store" in text and "(complete)" in text
    assert "candidate: 10 rows x 8, complete" in text and "target: 6 rows x 8, complete" in text
    assert "a: 5 (50.0%)" in text and "b: 5 (50.0%)" in text
    assert "projector" in text
    rc, text, _ = _run(capsys, ["inspect", tmp_path / "full", "--json"])
    desc = json.loads(text)
    assert desc["splits"]["candidate"]["rows"] == 10 and desc["splits"]["candidate"]["sources"] == {"a": 5, "b": 5}

    with pytest.raises(RuntimeError, match="simulated crash"):
        _featurize(tmp_path, path=tmp_path / "part", fail_at=7)
    rc, text, _ = _run(capsys, ["inspect", tmp_path / "part"])
    assert rc == 0 and "incomplete" in text and "/10" in text
    rc, _, err = _run(capsys, ["select", "--store", tmp_path / "part", "--method", "random", "--n", "2", "--out",
                               tmp_path / "o"])
    assert rc == 2 and "incomplete" in err and not (tmp_path / "o").exists()


def test_merge_shards(tmp_path, capsys):
    for rank in (0, 1):
        _featurize(tmp_path, path=tmp_path / "shards", shard=(rank, 2))
    shard_dirs = sorted((tmp_path / "shards").iterdir())
    rc, text, err = _run(capsys, ["merge", *shard_dirs, "--out", tmp_path / "merged"])
    assert rc == 0, err
    merged = FeatureStore.open(tmp_path / "merged")
    assert merged.count("candidate") == 10 and "candidate: 10 rows" in text
    single = _featurize(tmp_path, path=tmp_path / "single")
    np.testing.assert_array_equal(merged.features("candidate"), single.features("candidate"))
    # the parent directory form
    rc, _, err = _run(capsys, ["merge", tmp_path / "shards", "--out", tmp_path / "merged2"])
    assert rc == 0, err
    # errors: existing output, missing rank
    rc, _, err = _run(capsys, ["merge", *shard_dirs, "--out", tmp_path / "merged"])
    assert rc == 2 and "already exists" in err
    rc, _, err = _run(capsys, ["merge", shard_dirs[0], "--out", tmp_path / "m3"])
    assert rc == 2 and "missing shard rank" in err and not (tmp_path / "m3").exists()


def test_demo_quick_writes_report_and_results(tmp_path, capsys, monkeypatch):
    import tarot.app.demo as demo

    monkeypatch.setitem(demo.DEMO_SIZES, "quick", {"n_per_mode": 20, "n_off_target": 40, "n_targets": 20, "dim": 4})
    out = tmp_path / "demo"
    rc, text, err = _run(capsys, ["demo", "--quick", "--out", out])
    assert rc == 0, err
    page = (out / "index.html").read_text()
    assert "Comparison of selection methods" in page and 'src="otm_curves.png"' in page
    for method in ("random", "topk_mean", "fixed_size", "otm"):
        assert SelectionResult.load(out / "results" / method).method == method
        assert f"<td>{method}</td>" in page
    comparison = json.loads((out / "comparison.json").read_text())
    rows = {r["method"]: r for r in comparison["methods"]}
    assert set(rows) == {"random", "topk_mean", "fixed_size", "otm", "otm (weighted)"}
    for row in rows.values():
        assert abs(sum(row["shares"].values()) - 1.0) < 1e-9
    assert rows["fixed_size"]["selected"] == rows["random"]["selected"] == 10  # 10 % of 100
    otm = SelectionResult.load(out / "results" / "otm")
    assert otm.weights is not None and rows["otm"]["selected"] == otm.size
    # the advertised next step runs on the demo's own output
    assert f"tarot select --store {out / 'store'}" in text
    rc, _, err = _run(capsys, ["select", "--store", out / "store", "--method", "fixed_size", "--ratio", "0.1", "--out",
                               out / "mine"])
    assert rc == 0, err
    mine = SelectionResult.load(out / "mine")
    assert np.array_equal(mine.indices, SelectionResult.load(out / "results" / "fixed_size").indices)
    assert set(mine.composition()) <= {"mode0", "mode1", "mode2", "off_target"}


def test_demo_failure_leaves_no_directory(tmp_path, capsys, monkeypatch):
    import tarot.app.demo as demo

    def broken(out_dir, quick=False, seed=0):
        (out_dir / "results").mkdir(parents=True)
        raise ValueError("mixture proportions must sum to 1")

    monkeypatch.setattr(demo, "run_demo", broken)
    rc, _, err = _run(capsys, ["demo", "--out", tmp_path / "d"])
    assert rc == 2 and "proportions" in err and not (tmp_path / "d").exists()


def test_help_and_version_import_neither_torch_nor_pot():
    code = ("import sys, tarot, tarot.app.cli; tarot.app.cli.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'ot') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # the heavy libraries load in the command that needs them, not for --help
    assert tarot.select.__module__ == "tarot.api"  # and the lazy public names still resolve
