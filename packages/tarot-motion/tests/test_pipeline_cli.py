import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from fixtures import varied, write_flat_db, write_legacy_scenario
from tarot_motion.cli import build_parser, main
from tarot_motion.config import ConfigError, load_config

tarot = pytest.importorskip("tarot")

TINY = {"hidden_size": 16, "tx_hidden_size": 32, "tx_num_heads": 2, "map_heads": 2}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("proj")
    write_flat_db(root / "waymo_db", [varied("waymo", i) for i in range(6)])
    write_flat_db(root / "av2_db", [varied("av2", i) for i in range(4)])
    write_flat_db(root / "nusc_t", [varied("nusc", i) for i in range(3)])
    write_flat_db(root / "nusc_v", [varied("nusc", i + 3) for i in range(3)])
    cfg = {
        "data": {"candidates": [{"path": str(root / "waymo_db")}, {"path": str(root / "av2_db"), "label": "av2"}],
                 "target": {"path": str(root / "nusc_t")}, "val": {"path": str(root / "nusc_v")},
                 "cache_dir": str(root / "cache")},
        "preprocess": {"max_num_roads": 8},
        "model": TINY,
        "train": {"batch_size": 4, "epochs": 2, "eval_batch_size": 8},
        "featurize": {"proj_dim": 16, "batch_size": 4},
        "select": {"method": "fixed_size", "ratio": 0.5, "weighting": True},
    }
    (root / "motion.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _run(args, capsys):
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


def test_help_lists_every_command():
    text = build_parser().format_help()
    for cmd in ("convert", "preprocess", "train", "featurize", "select", "evaluate", "demo"):
        assert cmd in text
    r = subprocess.run([sys.executable, "-m", "tarot_motion.cli", "select", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "tarot.select" in r.stdout and "--set" in r.stdout


def test_tarot_motion_follows_the_cli_convention():
    from tarot.app.conventions import check_convention

    settings = {"--config", "--set", "--print-config", "--no-progress", "--out"}
    needs = {"convert": {"--out"}, "preprocess": settings, "train": settings, "featurize": settings,
             "select": {"--store", *settings}, "evaluate": settings, "demo": settings}
    assert check_convention(build_parser(), needs) == []


def test_print_config_resolves_without_running(project, capsys, tmp_path):
    rc, cap = _run(["train", "--config", project / "motion.yaml", "--set", "train.lr=0.5", "--out", tmp_path / "t",
                    "--print-config"], capsys)
    printed = yaml.safe_load(cap.out)
    assert rc == 0 and printed["train"]["lr"] == 0.5 and printed["model"]["hidden_size"] == 16
    assert not (tmp_path / "t").exists()
    rc, cap = _run(["demo", "--quick", "--out", tmp_path / "d", "--set", "train.epochs=1", "--print-config"], capsys)
    printed = yaml.safe_load(cap.out)
    assert rc == 0 and printed["train"]["epochs"] == 1 and printed["data"]["cache_dir"] == str(tmp_path / "d" / "cache")
    assert not (tmp_path / "d").exists()


def test_device_flag_and_setting(project, capsys, tmp_path):
    rc, cap = _run(["train", "--config", project / "motion.yaml", "--device", "cpu", "--out", tmp_path / "t",
                    "--print-config"], capsys)
    assert rc == 0 and yaml.safe_load(cap.out)["device"] == "cpu"
    if not torch.cuda.is_available():  # asking for a GPU that is not there is one line, before anything is written
        rc, cap = _run(["evaluate", "--config", project / "motion.yaml", "--device", "cuda:0", "--checkpoint",
                        tmp_path / "none.pt", "--out", tmp_path / "e"], capsys)
        assert rc == 2 and "device: 'cuda:0' asked for" in cap.err and len(cap.err.strip().splitlines()) == 1
        assert not (tmp_path / "e" / "config.yaml").exists()
    rc, cap = _run(["train", "--config", project / "motion.yaml", "--set", "device=gpu", "--out", tmp_path / "t2"],
                   capsys)
    assert rc == 2 and "expected auto | cpu | cuda | cuda:<index>, got 'gpu'" in cap.err


def test_a_missing_store_is_one_line(tmp_path, capsys):
    rc, cap = _run(["select", "--store", tmp_path / "nowhere", "--out", tmp_path / "s"], capsys)
    assert rc == 2 and cap.err.count("\n") == 1 and cap.err.startswith("tarot-motion select: error: ")


def test_config_overrides_and_unknown_keys(project):
    cfg = load_config(project / "motion.yaml", ["train.lr=0.01", "select.method=otm", "select.options={folds: 3}"])
    assert cfg["train"]["lr"] == 0.01 and cfg["select"]["method"] == "otm" and cfg["select"]["options"] == {"folds": 3}
    assert cfg["model"]["hidden_size"] == 16 and cfg["model"]["num_modes"] == 6
    with pytest.raises(ConfigError, match="train.lrr"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["train.lr"])


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, cap = _run(["preprocess", "--db", tmp_path / "empty", "--set", f"data.cache_dir={tmp_path / 'c'}"], capsys)
    assert rc == 2 and cap.err.count("\n") == 1 and "empty database" in cap.err
    rc, cap = _run(["train", "--out", tmp_path / "o", "--set", "model.hidden=3"], capsys)
    assert rc == 2 and "model.hidden" in cap.err and cap.err.count("\n") == 1
    rc, cap = _run(["train", "--out", tmp_path / "o2"], capsys)
    assert rc == 2 and "data.candidates" in cap.err


def test_cli_convert_metadrive_on_legacy_fixture(tmp_path, capsys):
    src = tmp_path / "0.pkl"
    write_legacy_scenario(src, T=91)
    rc, cap = _run(["convert", "--out", tmp_path / "db", "--files", src], capsys)
    assert rc == 0 and "wrote 2 scenarios" in cap.out and not cap.err
    # the old verb still works for one release, with a deprecation line
    rc, cap = _run(["convert-metadrive", "--out", tmp_path / "db2", "--files", src], capsys)
    assert rc == 0 and "wrote 2 scenarios" in cap.out
    assert "warning: the verb convert-metadrive is deprecated" in cap.err and "use tarot-motion convert" in cap.err
    assert json.loads((tmp_path / "db" / "convert_report.json").read_text())["scenarios"] == 2


def test_full_cli_chain_featurize_select_train_evaluate(project, capsys):
    cfgf = project / "motion.yaml"
    rc, _ = _run(["train", "--config", cfgf, "--out", project / "warm", "--no-progress"], capsys)
    assert rc == 0
    saved = yaml.safe_load((project / "warm" / "config.yaml").read_text())
    assert saved["train"]["init"] == "scratch" and saved["model"]["hidden_size"] == 16
    rc, _ = _run(["featurize", "--config", cfgf, "--out", project / "feat", "--checkpoint", project / "warm/epoch1.pt",
                  "--checkpoint", project / "warm/epoch2.pt", "--no-progress"], capsys)
    assert rc == 0
    store = tarot.FeatureStore.open(str(project / "feat" / "store"))
    assert store.features("candidate").shape == (10, 16) and store.features("target").shape == (3, 16)
    assert sorted(set(store.sources("candidate"))) == ["av2", "waymo"]
    assert store.manifest  # written by tarot-core
    for rank in ("1", "0"):  # the same features in two shards (rank 0 last merges them)
        rc, _ = _run(["featurize", "--config", cfgf, "--out", project / "feat2", "--checkpoint",
                      project / "warm/epoch1.pt", "--checkpoint", project / "warm/epoch2.pt", "--rank", rank,
                      "--world-size", "2", "--no-progress"], capsys)
        assert rc == 0
    merged = tarot.FeatureStore.open(str(project / "feat2" / "store"))
    for split in ("candidate", "target"):
        assert np.array_equal(np.asarray(merged.features(split)), np.asarray(store.features(split)))
    rc, cap = _run(["select", "--config", cfgf, "--store", project / "feat", "--out", project / "sel",
                    "--dry-run"], capsys)  # the estimate only: nothing written
    assert rc == 0 and "ot_and_weights" in cap.out and "N=10, M=3" in cap.out and not (project / "sel").exists()
    rc, cap = _run(["select", "--config", cfgf, "--store", project / "feat", "--out", project / "sel",
                    "--no-progress"], capsys)
    assert rc == 0
    comp = json.loads((project / "sel" / "composition.json").read_text())
    assert sum(v["selected"] for v in comp.values()) == 5 and set(comp) == {"av2", "waymo"}
    assert (project / "sel" / "report" / "index.html").exists()
    res = tarot.SelectionResult.load(str(project / "sel" / "selection"))
    assert res.size == 5 and res.weights is not None
    rc, _ = _run(["train", "--config", cfgf, "--selection", project / "sel" / "selection", "--out", project / "tsel",
                  "--set", "train.seed=1", "--no-progress"], capsys)
    assert rc == 0
    m = json.loads((project / "tsel" / "metrics.json").read_text())
    assert "val/nuscenes/brier_fde" in m["metrics"] and m["metrics"]["val/count"] == 3
    assert yaml.safe_load((project / "tsel" / "config.yaml").read_text())["train"]["seed"] == 1
    rc, cap = _run(["evaluate", "--config", cfgf, "--checkpoint", project / "tsel" / "last.pt", "--out",
                    project / "ev"], capsys)
    assert rc == 0
    ev = json.loads((project / "ev" / "metrics.json").read_text())
    np.testing.assert_allclose(ev["val/brier_fde"], m["metrics"]["val/brier_fde"], rtol=1e-5)
    assert ev["constant_velocity/count"] == 3 and ev["constant_velocity/minADE6"] < 1e-3  # fixtures: constant speed
    # a crash (SIGKILL) just after select and evaluate began, and a little later: nothing that looks complete is left,
    # and the same command run again ends with the uninterrupted run's result
    from tarot.app.conventions import kill_while_writing

    commands = {"select": (["select", "--config", cfgf, "--store", project / "feat", "--no-progress"],
                           "selection/result.json"),
                "evaluate": (["evaluate", "--config", cfgf, "--checkpoint", project / "tsel" / "last.pt"],
                             "metrics.json")}
    for name, (argv, marker) in commands.items():
        for k, delay in enumerate((0.0, 0.3)):
            out = project / f"{name}_killed{k}"
            killed = kill_while_writing("tarot_motion.cli", argv, out, after_lock_s=delay)
            assert killed or delay > 0, f"{name} finished before it could be killed"
            if (out / marker).exists():  # only a finished step writes its marker, and then completely
                assert (tarot.SelectionResult.load(out / "selection") if name == "select"
                        else json.loads((out / marker).read_text()))
            assert _run([*argv, "--out", out], capsys)[0] == 0
            if name == "select":
                again = tarot.SelectionResult.load(out / "selection")
                assert np.array_equal(again.indices, res.indices) and np.array_equal(again.weights, res.weights)
            else:
                assert json.loads((out / marker).read_text()) == ev


def test_training_set_weights_and_merge_targets(project):
    from tarot_motion import pipeline

    cfg = load_config(project / "motion.yaml")
    cand = pipeline.load_split(cfg, "candidates", progress=False, log=lambda *_: None)
    tgt = pipeline.load_split(cfg, "target", progress=False, log=lambda *_: None)
    X = np.random.default_rng(0).normal(size=(len(cand), 8)).astype(np.float32)
    Y = np.random.default_rng(1).normal(size=(len(tgt), 8)).astype(np.float32)
    res = tarot.select(X, Y, method="fixed_size", ratio=0.5, weighting=True, merge_targets=True,
                       target_repeats=2, candidate_sources=cand.sources, progress=False)
    ds = pipeline.training_set(cand, res, tgt)
    assert len(ds) == int(res.weights.sum()) + 2 * len(tgt)
    comp = pipeline.composition(res, cand.sources)
    assert sum(v["selected"] for v in comp.values()) == res.size
    np.testing.assert_allclose(sum(v["weighted_share"] for v in comp.values()), 1.0)


def test_demo_quick_on_real_embedded_scenarios(tmp_path, capsys):
    from tarot_motion.convert import legacy_waymo_files

    try:
        legacy_waymo_files()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    rc, cap = _run(["demo", "--quick", "--seeds", "2", "--out", tmp_path / "demo", "--no-progress"], capsys)
    assert rc == 0
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    merged = ["random", "topk_mean", "fixed_size", "otm"]
    methods = ["random", "topk_mean", "round_robin", "tsds", "fixed_size", "otm"]
    assert [r["method"] for r in res["rows"]] == [*methods, *(f"{m}+targets" for m in merged),
                                                  "embeddings_topk_mean", "embeddings_fixed_size", "all_candidates",
                                                  "target_only", "constant_velocity"]
    for r in res["rows"]:
        assert len(r["brier_fde"]["values"]) == 2 and np.isfinite(r["brier_fde"]["mean"])
        assert sum(v["selected"] for v in r["composition"].values()) == r["selected"]
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["target_only"]["merged_targets"] == res["n_target"] and rows["target_only"]["selected"] == 0
    assert rows["constant_velocity"]["brier_fde"]["std"] == 0.0  # deterministic: the same value for every seed
    assert len(res["skipped"]) == 2 and all(v == {} for v in res["skipped"].values())
    comps = res["comparisons"]["comparisons"]
    tarot_rows = {"fixed_size", "otm", "fixed_size+targets", "otm+targets"}
    assert {c["method"] for c in comps} == tarot_rows
    assert {c["baseline"] for c in comps} == set(rows) - tarot_rows  # every baseline, constant velocity included
    assert res["verdict"].startswith(("TAROT wins on brier-FDE", "TAROT does not win on brier-FDE"))
    pool = {k.split("/")[0] for r in res["rows"] for k in r["composition"]}
    assert pool == {"waymo", "argoverse1"}
    for key in ("fixed_size", "otm"):
        html = (tmp_path / "demo" / "report" / key / "index.html").read_text()
        assert "brier_fde" in html and "minADE6" in html and "Does TAROT win?" in html
        assert ">Trajectories</h2>" in html and 'src="trajectories.png"' in html
        assert (tmp_path / "demo" / "report" / key / "trajectories.png").stat().st_size > 10_000
    assert res["trajectories"] == "trajectories.png"
    assert res["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
    assert (tmp_path / "demo" / "config.yaml").exists() and (tmp_path / "demo" / "results.md").exists()


def test_demo_quick_with_wayformer(tmp_path, capsys):
    from tarot_motion.convert import legacy_waymo_files

    try:
        legacy_waymo_files()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    rc, cap = _run(["demo", "--quick", "--seeds", "1", "--out", tmp_path / "demo", "--no-progress", "--set",
                    "model.name=wayformer"], capsys)
    assert rc == 0, cap.err
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert all(np.isfinite(r["brier_fde"]["mean"]) for r in res["rows"])
    saved = yaml.safe_load((tmp_path / "demo" / "runs" / "otm" / "seed0" / "config.yaml").read_text())
    assert saved["model"]["name"] == "wayformer" and saved["model"]["num_queries_enc"] == 8
    html = (tmp_path / "demo" / "report" / "otm" / "index.html").read_text()
    assert "a reduced Wayformer-Ego" in html and ">Trajectories</h2>" in html


def test_selection_of_another_pool_is_a_clear_error(project):
    from tarot_motion import pipeline
    from tarot_motion.errors import MotionDataError

    cfg = load_config(project / "motion.yaml")
    cand = pipeline.load_split(cfg, "candidates", progress=False, log=lambda *_: None)
    rng = np.random.default_rng(0)
    res = tarot.select(rng.normal(size=(len(cand) + 1, 4)).astype(np.float32),
                       rng.normal(size=(3, 4)).astype(np.float32), method="random", ratio=0.5, progress=False,
                       compute_ot=False)
    with pytest.raises(MotionDataError, match="data.candidates"):
        pipeline.training_set(cand, res)


def test_demo_stage_keys_ignore_the_other_models_settings():
    from tarot_motion.demo import demo_config, model_key

    cfg = demo_config("runs/x")["model"]
    auto = model_key(cfg)
    assert "name" not in auto and "num_queries_enc" not in auto and auto["entropy_weight"] == 0.0
    assert model_key({**cfg, "num_queries_enc": 7}) == auto  # a Wayformer setting keeps AutoBot's stages
    assert model_key({**cfg, "hidden_size": 64}) != auto
    way = model_key({**cfg, "name": "wayformer"})
    assert way["name"] == "wayformer" and "entropy_weight" not in way and way != auto


def test_demo_stage_guard_discards_outputs_of_another_config(tmp_path):
    from tarot_motion.demo import _claim

    stage = tmp_path / "runs" / "otm"
    _claim(stage, {"lr": 1})
    stage.mkdir()
    (stage / "metrics.json").write_text("{}")
    _claim(stage, {"lr": 1})  # same configuration: outputs are kept (resume)
    assert (stage / "metrics.json").exists()
    _claim(stage, {"lr": 2})  # another configuration: stale outputs are removed
    assert not (stage / "metrics.json").exists()


def test_cli_convert_argoverse1_log_fixture(tmp_path, capsys):
    from fixtures import write_argoverse1_log

    src = tmp_path / "log.pkl"
    write_argoverse1_log(src, steps=91)
    rc, cap = _run(["convert", "--source", "argoverse1", "--out", tmp_path / "db", "--files", src], capsys)
    assert rc == 0 and "wrote 2 scenarios" in cap.out


def test_a_misspelt_database_entry_key_is_an_error():
    from tarot_motion import pipeline
    from tarot_motion.errors import MotionDataError

    with pytest.raises(MotionDataError, match=r"data.candidates\[1\]: unknown key\(s\) 'lable' \(did you mean "
                                              r"'label'\?\); an entry takes path, label, starting_frame"):
        pipeline._specs([{"path": "a"}, {"path": "b", "lable": "waymo"}], "candidates")
    assert pipeline._specs(["a", {"path": "b", "label": "x", "max_data_num": 3}], "candidates")[1]["label"] == "x"


def test_help_epilog_example_points_at_the_saved_selection():
    from tarot_motion.cli import build_parser

    text = build_parser().format_help()
    assert "--selection runs/sel_otm/selection" in text  # `select --out DIR` saves the result in DIR/selection
