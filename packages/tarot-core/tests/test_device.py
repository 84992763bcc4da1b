"""The ``device`` setting shared by the domain packages (tarot.app.device, tarot.app.conventions.add_device)."""

from __future__ import annotations

import argparse

import pytest
import torch
from tarot.app.conventions import add_device, device_override
from tarot.app.device import device_name, pick_device


def test_auto_and_cpu():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == want
    assert pick_device(None).type == want
    assert pick_device("CPU") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    assert device_name("cpu") == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "tpu:0", ""])
def test_unknown_spelling_is_one_line(bad):
    with pytest.raises(ValueError, match=r"^train.device: expected auto \| cpu \| cuda \| cuda:<index>, got"):
        pick_device(bad, where="train.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where there is no CUDA device")
def test_cuda_without_cuda_is_an_error_not_a_fallback():
    for spec in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ValueError, match="asked for, but .*use cpu or auto"):
            pick_device(spec)


def test_cuda_index_past_the_last_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda:1")
    assert pick_device("auto") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"sees 2 CUDA device\(s\) \(cuda:0 … cuda:1\)"):
        pick_device("cuda:2")


def test_device_flag_is_the_last_override():
    p = argparse.ArgumentParser()
    p.add_argument("--set", dest="overrides", action="append", default=[])
    add_device(p)
    assert device_override(p.parse_args(["--set", "device=cpu", "--device", "cuda:1"])) == ["device=cpu",
                                                                                            "device=cuda:1"]
    assert device_override(p.parse_args(["--set", "a=1"])) == ["a=1"]


def test_device_for_defaults_to_where_the_model_is():
    from tarot.app.device import device_for

    model = torch.nn.Linear(2, 2)
    assert device_for(model) == torch.device("cpu") and device_for(model, "cpu") == torch.device("cpu")
    assert device_for(torch.nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU
    with pytest.raises(ValueError, match="expected auto"):
        device_for(model, "gpu")
