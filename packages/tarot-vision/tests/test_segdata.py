from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tarot_vision import labels as L
from tarot_vision import segdata as S
from vision_fixtures import ALL_IDS, expected_train_ids, label_pattern, make_gta5, rgb_image


def test_lut_matches_spec_table_on_hand_built_arrays():
    ids = np.array(
        [
            [0, 7, 8, 11, 12],
            [13, 17, 19, 20, 21],
            [22, 23, 24, 25, 26],
            [27, 28, 31, 32, 33],
            [9, 10, 18, 29, 30],
            [34, 45, 200, 254, 255],
        ],
        dtype=np.uint8,
    )
    out = L.ids_to_train_ids(ids)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected_train_ids(ids))
    assert out[0].tolist() == [255, 0, 1, 2, 3]
    assert out[3].tolist() == [14, 15, 16, 17, 18]
    assert set(out[4].tolist()) == {255} and set(out[5].tolist()) == {255}
    # the licence plate id -1 (only in label definitions) and other out-of-range ints map to ignore
    np.testing.assert_array_equal(L.ids_to_train_ids(np.array([-1, 7, 300, 26], dtype=np.int32)), [255, 0, 255, 13])
    assert len(L.CLASSES) == len(L.PALETTE) == 19
    assert L.colorize(np.array([[0, 255]], dtype=np.uint8)).tolist() == [[[128, 64, 128], [0, 0, 0]]]


def test_check_train_ids_rejects_label_ids():
    with pytest.raises(L.LabelFormatError, match="outside 0-18/255"):
        L.check_train_ids(np.array([[0, 26]], dtype=np.uint8), "x.png")


def test_scan_and_convert_cityscapes(cityscapes_root):
    recs = S.scan_cityscapes(cityscapes_root, "train")
    assert [r.stem for r in recs] == [
        "aachen/aachen_000000_000019",
        "aachen/aachen_000000_000020",
        "bochum/bochum_000000_000019",
        "bochum/bochum_000000_000020",
    ]
    assert recs[0].label_ids.name == "aachen_000000_000019_gtFine_labelIds.png"
    summary = S.convert("cityscapes", cityscapes_root, splits=("train", "val"), progress=False)
    assert summary["splits"]["train"]["written"] == 4 and summary["splits"]["val"]["written"] == 4
    assert (cityscapes_root / "train.txt").read_text().splitlines()[0] == "aachen/aachen_000000_000019"
    assert len((cityscapes_root / "val.txt").read_text().splitlines()) == 4
    assert json.loads((cityscapes_root / "conversion.json").read_text())["dataset"] == "cityscapes"
    for rec in recs + S.scan_cityscapes(cityscapes_root, "val"):
        assert rec.label_train.name.endswith("_gtFine_labelTrainIds.png")
        with Image.open(rec.label_train) as im:
            assert im.mode == "L"
            got = np.asarray(im)
        src = np.asarray(Image.open(rec.label_ids))
        assert set(np.unique(src).tolist()) == set(ALL_IDS)
        np.testing.assert_array_equal(got, expected_train_ids(src))
    # rerun skips finished files
    again = S.convert("cityscapes", cityscapes_root, splits=("train",), progress=False)
    assert again["splits"]["train"] == {"images": 4, "written": 0, "existing": 4, "refreshed": 0, "resized": 0}


def test_gta5_palette_indices_and_size_mismatch(gta_root):
    recs = S.scan_gta5(gta_root)
    assert [r.stem for r in recs] == ["00001", "00002", "00003", "00004"]
    src = np.asarray(Image.open(recs[0].label_ids))
    assert Image.open(recs[0].label_ids).mode == "P"
    summary = S.convert("gta5", gta_root, progress=False)
    assert summary["splits"]["all"]["resized"] == 1
    got = np.asarray(Image.open(recs[0].label_train))
    np.testing.assert_array_equal(got, expected_train_ids(src))
    # the mismatched label was resized (nearest) to the image size
    assert np.asarray(Image.open(recs[2].label_train)).shape == (24, 48)
    # converted files are not picked up as sources on a rescan
    assert len(S.scan_gta5(gta_root)) == 4
    assert (gta_root / "all.txt").read_text().split() == ["00001", "00002", "00003", "00004"]


def test_gta5_size_mismatch_error_policy(gta_root):
    with pytest.raises(L.LabelFormatError, match=r"00003\.png: label is 44x26 but its image is 48x24"):
        S.convert("gta5", gta_root, on_size_mismatch="error", progress=False)


def test_gta5_missing_label_one_line_error(tmp_path):
    root = make_gta5(tmp_path / "g", n=3, mismatch=None)
    (root / "labels" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError) as exc:
        S.convert("gta5", root, progress=False)
    msg = str(exc.value)
    assert "00002.png: no label found" in msg and "\n" not in msg
    # no half-written artefacts: nothing converted, no stem list, no summary
    assert not list((root / "labels").glob("*_labelTrainIds.png")) and not (root / "all.txt").exists()
    kept = S.check_records(S.scan_gta5(root), on_missing="skip")
    assert [r.stem for r in kept] == ["00001", "00003"]


def test_gta5_rgb_label_rejected(tmp_path):
    root = make_gta5(tmp_path / "g", n=2, mismatch=None)
    bad = root / "labels" / "00002.png"
    Image.fromarray(rgb_image(24, 48, 0)).save(bad)
    with pytest.raises(L.LabelFormatError) as exc:
        S.convert("gta5", root, progress=False)
    msg = str(exc.value)
    assert str(bad) in msg and "mode 'RGB'" in msg and "\n" not in msg


def test_cityscapes_bad_name_and_missing_tree(tmp_path, cityscapes_root):
    with pytest.raises(FileNotFoundError, match="leftImg8bit/test"):
        S.scan_cityscapes(cityscapes_root, "test")
    d = tmp_path / "c" / "leftImg8bit" / "train" / "aachen"
    d.mkdir(parents=True)
    Image.fromarray(rgb_image(8, 8, 0)).save(d / "aachen_0_1_leftImg8bit.png")
    with pytest.raises(ValueError, match="aachen_0_1_leftImg8bit.png: expected <city>"):
        S.scan_cityscapes(tmp_path / "c", "train")


def test_converted_trainids_with_label_ids_values_rejected(cityscapes_root):
    rec = S.scan_cityscapes(cityscapes_root, "train")[0]
    Image.fromarray(label_pattern(32, 64)).save(rec.label_train)  # labelIds saved under the trainIds name
    with pytest.raises(L.LabelFormatError, match="labelTrainIds.png: trainId map holds values"):
        S.load_train_ids(rec)


def test_not_a_png_label(gta_root):
    (gta_root / "labels" / "00001.png").write_bytes(b"not a png")
    with pytest.raises(L.LabelFormatError, match="00001.png: not a readable PNG"):
        S.load_train_ids(S.scan_gta5(gta_root)[0])


def test_ann_file_round_trip_with_repeats(gta_root, tmp_path):
    recs = S.scan_gta5(gta_root)
    stems = [r.stem for r in recs]
    path = S.write_ann_file([stems[0], stems[2], stems[3]], tmp_path / "sel" / "ann.txt", repeats=[2, 1, 3])
    assert path.read_text() == "00001\n00001\n00003\n00004\n00004\n00004\n"
    back = S.resolve_ann_file(path, "gta5", gta_root)
    assert [(r.image.name, r.label_train.name) for r in back] == [
        ("00001.png", "00001_labelTrainIds.png"),
        ("00001.png", "00001_labelTrainIds.png"),
        ("00003.png", "00003_labelTrainIds.png"),
        ("00004.png", "00004_labelTrainIds.png"),
        ("00004.png", "00004_labelTrainIds.png"),
        ("00004.png", "00004_labelTrainIds.png"),
    ]
    with pytest.raises(ValueError, match="negative repeat count"):
        S.write_ann_file(["00001"], tmp_path / "x.txt", repeats=[-1])
    (tmp_path / "bad.txt").write_text("00001\n00009\n")
    with pytest.raises(FileNotFoundError, match=r"bad.txt:2: stem '00009' has no image"):
        S.resolve_ann_file(tmp_path / "bad.txt", "gta5", gta_root)


def test_cityscapes_ann_file_resolves_like_mmseg(cityscapes_root, tmp_path):
    path = S.write_ann_file(["bochum/bochum_000000_000020"], tmp_path / "a.txt", repeats=[2])
    back = S.resolve_ann_file(path, "cityscapes", cityscapes_root, "train")
    assert len(back) == 2
    assert back[0].image == cityscapes_root / "leftImg8bit/train/bochum/bochum_000000_000020_leftImg8bit.png"
    assert back[0].label_train == cityscapes_root / "gtFine/train/bochum/bochum_000000_000020_gtFine_labelTrainIds.png"


def test_segmentation_dataset_fixed_size(gta_root, cityscapes_root):
    ds = S.SegmentationDataset(S.scan_gta5(gta_root), size=(16, 40))
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, 16, 40) and s["image"].dtype == torch.float32
        assert s["label"].shape == (16, 40) and s["label"].dtype == torch.int64
        # 24x48 -> 16x32 then padded to 40 columns with ignore
        assert (s["label"][:, 32:] == 255).all() and (
            s["image"][:, :, 32:] == S.normalize(np.zeros((1, 1, 3), np.uint8))
        ).all()
    ds2 = S.SegmentationDataset(S.scan_cityscapes(cityscapes_root, "val"), size=(16, 16), fit="center_crop")
    lab = ds2[0]["label"].numpy()
    src = np.asarray(Image.open(ds2.records[0].label_ids))
    np.testing.assert_array_equal(lab, expected_train_ids(src[8:24, 24:40]))


def test_selection_result_to_ann_file(gta_root, tmp_path):
    import tarot

    rng = np.random.default_rng(0)
    cand = rng.normal(size=(4, 3)).astype(np.float32)
    tgt = cand[[1, 3]] + 0.01 * rng.normal(size=(2, 3)).astype(np.float32)
    res = tarot.select(cand, tgt, method="fixed_size", n=2, weighting=True, progress=False)
    stems = [r.stem for r in S.scan_gta5(gta_root)]
    path = S.write_selection_ann_file(res, stems, tmp_path / "ann.txt")
    want = [stems[i] for i, r in zip(res.indices, res.repeat_counts()) for _ in range(int(r))]
    assert S.read_ann_file(path) == want and len(want) == int(res.repeat_counts().sum()) >= 2
    assert [r.image.name for r in S.resolve_ann_file(path, "gta5", gta_root)] == [f"{s}.png" for s in want]
    top = int(res.indices.max())
    with pytest.raises(ValueError, match=f"selection index {top} outside the {top} candidate stems"):
        S.write_selection_ann_file(res, stems[:top], tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()


def test_a_converted_label_older_than_its_source_is_never_used(tmp_path):
    """A source label edited after conversion: convert rewrites the stale trainId file, the torch loader maps the
    source instead of reading it, and the mmseg path (which reads the files itself) refuses it, naming the file."""
    import os

    from tarot_vision.mmseg_backend import _require_train_ids
    from vision_fixtures import save_palettised

    root = make_gta5(tmp_path / "gta5", mismatch=None)
    S.convert("gta5", root, progress=False)
    rec = S.scan("gta5", root)[0]
    new = label_pattern(24, 48, shift=7)  # the source changes after conversion
    save_palettised(new, rec.label_ids)
    t = rec.label_train.stat().st_mtime_ns
    os.utime(rec.label_ids, ns=(t + 10**9, t + 10**9))
    assert S.is_stale(rec)
    assert np.array_equal(S.load_train_ids(rec), expected_train_ids(new))
    with pytest.raises(ValueError, match=r"00001_labelTrainIds.png: gta5 trainId label is older than its source "
                                         r"00001.png \(stale\); rerun `tarot-vision convert`"):
        _require_train_ids([rec], "gta5")
    summary = S.convert("gta5", root, progress=False)
    assert summary["splits"]["all"]["refreshed"] == 1 and summary["splits"]["all"]["existing"] == 3
    assert not S.is_stale(rec)
    assert np.array_equal(np.asarray(Image.open(rec.label_train)), expected_train_ids(new))
    _require_train_ids([rec], "gta5")  # fresh again


def test_convert_refuses_a_truncated_image_naming_it(tmp_path):
    root = make_gta5(tmp_path / "gta5", mismatch=None)
    img = root / "images" / "00002.png"
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(ValueError, match=r"00002.png: image file is truncated or corrupted"):
        S.convert("gta5", root, progress=False)
    assert not (root / "labels" / "00002_labelTrainIds.png").exists()
