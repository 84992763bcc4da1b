"""tarot.app.config: defaults ← preset ← YAML file ← overrides, unknown keys refused, atomic save."""

from pathlib import Path

import pytest
import yaml
from tarot.app.config import ConfigError, apply_overrides, load_config, merge_config, parse_override, save_config

DEFAULTS = {"train": {"lr": 0.1, "steps": 10}, "select": {"ratio": 0.2, "options": {}}, "seeds": [0]}


def test_resolution_order_and_yaml_values(tmp_path):
    user = tmp_path / "u.yaml"
    user.write_text("train: {steps: 7}\nseeds: [1, 2]\n")
    over = ["train.lr=0.5", "select.ratio=auto", "seeds=[3]"]
    cfg = load_config(DEFAULTS, user, over, preset={"train": {"steps": 3}})
    assert cfg == {"train": {"lr": 0.5, "steps": 7}, "select": {"ratio": "auto", "options": {}}, "seeds": [3]}
    assert DEFAULTS["train"] == {"lr": 0.1, "steps": 10}  # defaults untouched
    assert load_config(DEFAULTS, None, ["train.steps=null"])["train"]["steps"] is None
    assert load_config(DEFAULTS, preset={"train": {"steps": 3}})["train"]["steps"] == 3


def test_free_form_sections_take_any_keys_and_replace_lists():
    cfg = apply_overrides(DEFAULTS, ["select.options={folds: 3, patience: 2}"])
    assert cfg["select"]["options"] == {"folds": 3, "patience": 2}
    assert merge_config(DEFAULTS, {"seeds": [4, 5]})["seeds"] == [4, 5]


@pytest.mark.parametrize("override,msg", [
    ("select.ratoi=0.1", "override 'select.ratoi=0.1': unknown config key 'select.ratoi' (known here: options, ratio)"),
    ("select.ratio", "expected key=value"),
    ("train..lr=1", "empty key"),
    ("train.lr=[1", "value is not valid YAML"),
])
def test_bad_overrides(override, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        load_config(DEFAULTS, None, [override])


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(DEFAULTS, bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping at the top level, got list"):
        load_config(DEFAULTS, bad)
    bad.write_text("train: {bogus: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.bogus'"):
        load_config(DEFAULTS, bad)
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(DEFAULTS, tmp_path / "missing.yaml")
    assert parse_override("a.b= ") == (["a", "b"], None)


def test_save_is_plain_yaml_and_leaves_no_temporary(tmp_path):
    cfg = {"out": Path("/x/y"), "pair": (1, 2), "nested": {"k": 1}}
    path = save_config(cfg, tmp_path / "run")
    assert yaml.safe_load(path.read_text()) == {"out": "/x/y", "pair": [1, 2], "nested": {"k": 1}}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]
