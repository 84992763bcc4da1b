"""The commands of docs/tutorials/vision.md are executed, so the tutorial cannot drift from the CLI.

- blocks marked ``<!-- doctest: run -->`` (the quick demo) run as written;
- blocks marked ``<!-- doctest: check -->`` are parsed by the CLI's parser and their config overrides validated; the
  GTA5 → Cityscapes blocks then also run on small generated trees in the real layouts (the ``gta_root`` /
  ``cityscapes_root`` fixtures, linked as ``data/gta5`` and ``data/cityscapes``) with a tiny model and image size
  appended as overrides; the ``backend=mmseg`` block runs when the [mmseg] extra is installed. The OTM selection and
  the full-size demo / LDS blocks are only checked.

The extraction logic lives in ``tests_docs/doccmd.py`` at the repository root; see that file for the markers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "tutorials" / "vision.md"
sys.path.insert(0, str(ROOT / "tests_docs"))
doccmd = pytest.importorskip("doccmd", reason="needs the repository checkout (tests_docs/doccmd.py)")

SEG_COMMANDS = ("featurize", "select", "train", "evaluate")
SMALL = ["model.arch=tiny", "data.size=[32, 64]", "featurize.proj_dim=32", "featurize.batch_size=2",
         "train.iters=2", "train.crop=[16, 32]", "evaluate.scale=[32, 64]"]  # fmt: skip
SMALL_MMSEG = ["model.tiny=true", "train.scale=[24, 48]"]


def _validate(prog: str, args, workdir: Path) -> None:
    """Config overrides of a tutorial command must name existing keys of the command's packaged config."""
    if prog != "tarot-vision" or args.command == "convert":
        return
    from tarot_vision.config import resolve_config

    name = {"demo": "demo", "lds": "lds"}.get(args.command, "seg")
    config = args.config if args.config is None or args.config.is_absolute() else workdir / args.config
    resolve_config(name, config, args.overrides)


def _rewrite(block) -> str | None:
    """Small-settings version of a GTA5 → Cityscapes block, or None to leave the block as it is."""
    if block.kind != "check" or "select.method=otm" in block.text:
        return None
    cmds = doccmd.commands(block.text)
    if not cmds or not all(c[:2] in (["tarot-vision", "convert"], *[["tarot-vision", s] for s in SEG_COMMANDS])
                           for c in cmds):  # fmt: skip
        return None
    if "backend=mmseg" in block.text:
        from tarot_vision.mmseg_backend import mmseg_available

        if not mmseg_available():
            return None
        small = SMALL + SMALL_MMSEG
    else:
        small = SMALL
    return doccmd.append_args(block.text, "tarot-vision", small, when=lambda argv: argv[1] in SEG_COMMANDS)


def test_vision_tutorial_commands(tmp_path, gta_root, cityscapes_root):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "gta5").symlink_to(gta_root)
    (work / "data" / "cityscapes").symlink_to(cityscapes_root)
    log = doccmd.run_page(PAGE, work, validate=_validate, rewrite=_rewrite, timeout=900)
    assert (work / "runs" / "vision-quick" / "report" / "index.html").is_file()
    assert sum(line.endswith("(rewritten)") for line in log) >= 4, log
    assert (work / "runs" / "sel" / "ann_file.txt").is_file()


def test_cli_reference_is_current():
    doccmd.assert_cli_reference_current("tarot-vision")
