from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from tarot_vision import segdata as S
from tarot_vision.cli import main
from tarot_vision.config import ConfigError, resolve_config
from tarot_vision.mmseg_backend import mmseg_available


def _sets(*pairs: str) -> list[str]:
    """``--set KEY=VALUE`` for every pair."""
    return [arg for pair in pairs for arg in ("--set", pair)]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("convert", "featurize", "select", "train", "evaluate", "demo", "lds"):
        assert cmd in text
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--quick" in capsys.readouterr().out
    assert main(["featurize", "--out", "unused", "--print-config", "--set", "select.ratio=auto"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["select"]["ratio"] == "auto" and printed["backend"] == "torch"
    # the old positional spelling still works for one release, with a deprecation line; --set is applied after it
    assert main(["featurize", "--out", "unused", "--print-config", "select.ratio=auto", "--set", "train.iters=5"]) == 0
    captured = capsys.readouterr()
    printed = yaml.safe_load(captured.out)
    assert printed["select"]["ratio"] == "auto" and printed["train"]["iters"] == 5
    assert "warning: positional KEY=VALUE (select.ratio=auto) is deprecated" in captured.err
    assert "use --set KEY=VALUE" in captured.err


def test_tarot_vision_follows_the_cli_convention():
    from tarot.app.conventions import check_convention
    from tarot_vision.cli import build_parser

    settings = {"--config", "--set", "--print-config", "--no-progress", "--out"}
    needs = {"convert": {"--no-progress"}, "featurize": settings, "select": {"--store", *settings},
             "train": settings, "evaluate": settings, "demo": settings, "lds": settings}
    assert check_convention(build_parser(), needs) == []


def test_the_old_features_flag_still_works_and_store_is_required(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["select", "--out", str(tmp_path / "s")])
    assert exc.value.code == 2 and "the following arguments are required: --store" in capsys.readouterr().err
    assert main(["select", "--features", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "warning: --features is deprecated and goes in the next release; use --store" in err
    assert "tarot-vision select: error:" in err and "Traceback" not in err


def test_config_overrides_and_unknown_keys(tmp_path):
    cfg = resolve_config("seg", overrides=["select.ratio=auto", "data.size=[64, 128]", "featurize.params=null"])
    assert cfg["select"]["ratio"] == "auto" and cfg["data"]["size"] == [64, 128] and cfg["featurize"]["params"] is None
    with pytest.raises(ConfigError, match="unknown config key 'select.ratoi'"):
        resolve_config("seg", overrides=["select.ratoi=0.1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        resolve_config("seg", overrides=["select.ratio"])
    user = tmp_path / "u.yaml"
    user.write_text("train:\n  iters: 7\n  bogus: 1\n")
    with pytest.raises(ConfigError, match=r"u.yaml: unknown config key 'train.bogus'"):
        resolve_config("seg", user)
    user.write_text("train: {iters: 7}\n")
    assert resolve_config("seg", user, ["train.lr=0.5"])["train"] == {
        **resolve_config("seg")["train"],
        "iters": 7,
        "lr": 0.5,
    }


def test_convert_cli_and_one_line_errors(gta_root, tmp_path, capsys):
    assert main(["convert", "gta5", "--root", str(gta_root), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["all"]["written"] == 4
    (gta_root / "labels" / "00002_labelTrainIds.png").unlink()
    (gta_root / "labels" / "00002.png").unlink()
    assert main(["convert", "gta5", "--root", str(gta_root), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "00002.png: no label found" in err
    assert main(["convert", "cityscapes", "--root", str(tmp_path / "nowhere")]) == 2
    assert "leftImg8bit/train: Cityscapes image folder missing" in capsys.readouterr().err
    assert main(["featurize", "--out", str(tmp_path / "f"), "--set", "candidate.root=null"]) == 2
    assert "candidate.root is not set" in capsys.readouterr().err


def _seg_pipeline(tmp_path, gta_root, cityscapes_root, backend_args: list[str], train_args: list[str]):
    common = _sets(
        f"candidate.root={gta_root}",
        f"target.root={cityscapes_root}",
        "data.size=[32, 64]",
        "featurize.proj_dim=32",
        "featurize.batch_size=2",
        *backend_args,
    )
    assert main(["convert", "gta5", "--root", str(gta_root), "--no-progress"]) == 0
    assert main(["convert", "cityscapes", "--root", str(cityscapes_root), "--no-progress"]) == 0
    feat = tmp_path / "feat"
    assert main(["featurize", "--out", str(feat), "--no-progress", *common]) == 0
    assert (feat / "config.resolved.yaml").is_file()
    sel = tmp_path / "sel"
    assert (
        main(
            [
                "select",
                "--store",
                str(feat),
                "--out",
                str(sel),
                "--no-progress",
                *common,
                *_sets("select.method=fixed_size", "select.ratio=0.5"),
            ]
        )
        == 0
    )
    summary = json.loads((sel / "summary.json").read_text())
    assert summary["selected"] == 2 and summary["candidates"] == 4
    lines = S.read_ann_file(sel / "ann_file.txt")
    assert len(lines) == summary["ann_file_lines"] and set(lines) <= {"00001", "00002", "00003", "00004"}
    assert len(lines) >= 2 and (sel / "report" / "index.html").is_file()
    page = (sel / "report" / "index.html").read_text()
    assert ">What was selected</h2>" in page and 'src="examples.png"' in page
    assert (sel / "report" / "examples.png").read_bytes()[:4] == b"\x89PNG"
    train = tmp_path / "train"
    assert main(["train", "--selection", str(sel), "--out", str(train), "--no-progress", *common,
                 *_sets(*train_args)]) == 0
    ckpt = next(train.rglob("final_state_dict.pth"))
    ev = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(ev),
                "--no-progress",
                *common,
                *_sets("evaluate.scale=[32, 64]"),
            ]
        )
        == 0
    )
    metrics = json.loads((ev / "metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 100.0
    # overlays of the first validation images (the fixture's val split holds 4), best weights by validation mIoU
    assert metrics["overlays"] == "overlays.png" and (ev / "overlays.png").read_bytes()[:4] == b"\x89PNG"
    assert next(train.rglob("best_state_dict.pth")).is_file()
    resolved = yaml.safe_load((train / "config.resolved.yaml").read_text())
    assert resolved["command"] == "train" and resolved["config"]["train"]["init"] == "scratch"
    return {"common": common, "feat": feat, "sel": sel, "ckpt": ckpt, "metrics": metrics}


def test_seg_pipeline_torch_backend(tmp_path, gta_root, cityscapes_root):
    run = _seg_pipeline(
        tmp_path,
        gta_root,
        cityscapes_root,
        ["backend=torch", "model.arch=tiny"],
        ["train.iters=2", "train.crop=[16, 32]", "train.val_interval=1"],
    )
    val = json.loads((tmp_path / "train" / "train_log.json").read_text())["val"]
    assert [v["iter"] for v in val] == [1, 2] and all(0.0 <= v["mIoU"] <= 100.0 for v in val)
    best = torch.load(tmp_path / "train" / "best_state_dict.pth", weights_only=True)
    assert best["iter"] == max(val, key=lambda v: (v["mIoU"], -v["iter"]))["iter"]
    # a crash (SIGKILL) just after select and evaluate began, and a little later: nothing that looks complete is left,
    # and the same command run again ends with the uninterrupted run's result
    from tarot.app.conventions import kill_while_writing

    commands = {
        "select": (["select", "--store", run["feat"], *run["common"], *_sets("select.method=fixed_size",
                                                                           "select.ratio=0.5")], "summary.json"),
        "evaluate": (["evaluate", "--checkpoint", run["ckpt"], *run["common"], *_sets("evaluate.scale=[32, 64]")],
                     "metrics.json"),
    }
    for name, (argv, marker) in commands.items():
        for k, delay in enumerate((0.0, 0.3)):
            out = tmp_path / f"{name}_killed{k}"
            killed = kill_while_writing("tarot_vision.cli", [*argv, "--no-progress"], out, after_lock_s=delay)
            assert killed or delay > 0, f"{name} finished before it could be killed"
            if (out / marker).exists():  # written last, and atomically
                json.loads((out / marker).read_text())
            assert main([*map(str, argv), "--out", str(out), "--no-progress"]) == 0
            if name == "select":
                assert (out / "ann_file.txt").read_text() == (run["sel"] / "ann_file.txt").read_text()
            else:
                assert json.loads((out / marker).read_text()) == run["metrics"]


@pytest.mark.mmseg
@pytest.mark.skipif(not mmseg_available(), reason="needs the [mmseg] extra")
def test_seg_pipeline_mmseg_backend(tmp_path, gta_root, cityscapes_root):
    _seg_pipeline(
        tmp_path,
        gta_root,
        cityscapes_root,
        ["backend=mmseg", "model.tiny=true"],
        ["train.iters=2", "train.crop=[16, 32]", "train.scale=[24, 48]", "train.val_interval=1",
         "evaluate.scale=[32, 64]"],
    )
    work = tmp_path / "train" / "work"
    assert len(list(work.glob("best_mIoU_iter_*.pth"))) == 1  # mmengine's save_best keeps one
    scalars = [json.loads(line) for f in work.glob("*/vis_data/scalars.json") for line in f.read_text().splitlines()]
    assert sorted(r["step"] for r in scalars if "mIoU" in r) == [1, 2]  # mmseg's own metrics file, per validation
    assert list(work.glob("*/*.log"))  # and its text log


def test_device_setting_and_flag(tmp_path, capsys):
    assert main(["demo", "--quick", "--device", "cpu", "--out", str(tmp_path / "d"), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["device"] == "cpu"
    if not torch.cuda.is_available():  # a GPU asked for where there is none: one line, nothing written
        assert main(["lds", "--quick", "--device", "cuda", "--out", str(tmp_path / "l")]) == 2
        err = capsys.readouterr().err
        assert "device: 'cuda' asked for" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "l" / "config.resolved.yaml").exists()


def test_torch_train_init_scratch_vs_checkpoint(tmp_path, gta_root):
    """algorithm.md B8: init=scratch starts from a fresh seeded init, never from another model's weights."""
    from tarot_vision import segpipe
    from tarot_vision.seg_models import build_torch_segmenter

    ann = S.write_ann_file(["00001", "00002"], tmp_path / "ann.txt")
    cfg = resolve_config(
        "seg",
        overrides=[
            "model.arch=tiny",
            f"candidate.root={gta_root}",
            "train.iters=0",
            "train.val_interval=0",
            "train.seed=3",
            "train.crop=[16, 32]",
        ],
    )
    torch.manual_seed(3)
    fresh = build_torch_segmenter("tiny").state_dict()
    other = build_torch_segmenter("tiny")
    torch.save(other.state_dict(), tmp_path / "other.pt")
    sd = torch.load(segpipe.train(cfg, tmp_path / "a", ann_file=ann, progress=False))["state_dict"]
    assert all(torch.equal(sd[k], fresh[k]) for k in fresh)
    assert not torch.equal(sd["classifier.1.weight"], other.state_dict()["classifier.1.weight"])
    cfg["train"]["init"] = str(tmp_path / "other.pt")
    sd2 = torch.load(segpipe.train(cfg, tmp_path / "b", ann_file=ann, progress=False))["state_dict"]
    assert all(torch.equal(sd2[k], other.state_dict()[k]) for k in fresh)
    assert json.loads((tmp_path / "b" / "train_log.json").read_text())["init"].endswith("other.pt")


def test_lds_quick_and_spearman(tmp_path):
    from tarot_vision.lds import spearman_columns

    a = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    np.testing.assert_allclose(spearman_columns(a, a[:, :1].repeat(2, 1)), [1.0, -1.0])
    assert main(["lds", "--quick", "--out", str(tmp_path / "lds"), "--no-progress", "--set", "subsets.m=6"]) == 0
    doc = json.loads((tmp_path / "lds" / "results.json").read_text())
    assert set(doc["lds"]) >= {"wfd", "cosine", "dot", "trak", "wfd_ridge=0.1", "wfd_ridge=ledoit_wolf",
                               "wfd_ridge=oas"} and doc["subsets"] == 6
    assert doc["whitening"]["wfd"]["ridge_rule"].startswith("auto") and doc["whitening"]["wfd"]["df"] > 0
    assert doc["whitening"]["wfd_ridge=oas"]["ridge_rule"] == "oas"
    for v in doc["lds"].values():
        assert -1.0 <= v["mean"] <= 1.0 and v["ci"][0] <= v["mean"] <= v["ci"][1]
    assert np.load(tmp_path / "lds" / "masks.npy").sum(1).tolist() == [doc["subset_size"]] * 6


def test_lds_on_cifar_batches(tmp_path, cifar_root):
    out = tmp_path / "lds_cifar"
    assert (
        main(
            [
                "lds",
                "--quick",
                "--out",
                str(out),
                "--no-progress",
                *_sets(
                    f"data.cifar_root={cifar_root}",
                    "data.n_train=40",
                    "data.n_targets=10",
                    "subsets.m=4",
                    "featurize.proj_dim=16",
                    "model.arch=resnet9",
                    "model.width=0.125",
                ),
            ]
        )
        == 0
    )
    doc = json.loads((out / "results.json").read_text())
    assert doc["data"] == "cifar10" and doc["n_train"] == 40 and doc["n_targets"] == 10


def test_featurize_sharding_flags_merge_to_the_single_process_store(tmp_path, gta_root, cityscapes_root):
    """Two shards written by separate invocations (--rank/--world-size) merge into the unsharded store exactly."""
    from tarot import FeatureStore

    common = _sets(f"candidate.root={gta_root}", f"target.root={cityscapes_root}", "data.size=[32, 64]",
                   "featurize.proj_dim=16", "featurize.batch_size=1", "backend=torch", "model.arch=tiny")
    assert main(["convert", "gta5", "--root", str(gta_root), "--no-progress"]) == 0
    assert main(["convert", "cityscapes", "--root", str(cityscapes_root), "--no-progress"]) == 0
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert main(["featurize", "--out", str(single), "--no-progress", *common]) == 0
    for rank in ("1", "0"):  # rank 0 last: it merges once both shards are complete
        assert main(["featurize", "--out", str(sharded), "--rank", rank, "--world-size", "2", "--no-progress",
                     *common]) == 0
    a, b = FeatureStore.open(single / "features"), FeatureStore.open(sharded / "features")
    for split in ("candidate", "target"):
        assert np.array_equal(np.asarray(a.features(split)), np.asarray(b.features(split)))
        assert list(a.ids(split)) == list(b.ids(split))


def test_select_dry_run_prints_the_estimate_and_writes_nothing(tmp_path, capsys):
    from tarot import FeatureStore

    rng = np.random.default_rng(0)
    FeatureStore.from_arrays(tmp_path / "run" / "features", {"candidate": rng.normal(size=(50, 8)),
                                                             "target": rng.normal(size=(7, 8))})
    out = tmp_path / "sel"
    assert main(["select", "--store", str(tmp_path / "run"), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "N=50, M=7, d=8" in text and "ot_and_weights" in text and not out.exists()
