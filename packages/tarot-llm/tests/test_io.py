"""Fingerprints of finished steps: what may be reused after a crash and what must be recomputed."""

from __future__ import annotations

from tarot_llm.io import fingerprint, reusable, write_json


def test_fingerprint_follows_file_and_directory_contents(tmp_path):
    f = tmp_path / "sel.jsonl"
    f.write_text('{"a": 1}\n')
    d = tmp_path / "adapter"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "w.bin").write_bytes(b"\x00\x01")
    base = fingerprint(f, d, {"lr": 1e-3, "epochs": 2}, None)
    assert base == fingerprint(f, d, {"epochs": 2, "lr": 1e-3}, None)  # key order does not matter
    assert base != fingerprint(f, d, {"lr": 2e-3, "epochs": 2}, None)
    (d / "sub" / "w.bin").write_bytes(b"\x00\x02")
    assert base != fingerprint(f, d, {"lr": 1e-3, "epochs": 2}, None)
    assert fingerprint("ab", "c") != fingerprint("a", "bc")  # parts are delimited


def test_reusable_only_with_the_same_fingerprint(tmp_path):
    p = tmp_path / "done.json"
    assert reusable(p, "x") is None
    write_json(p, {"fingerprint": "x", "score": 0.5})
    assert reusable(p, "x") == {"fingerprint": "x", "score": 0.5}
    assert reusable(p, "y") is None
    p.write_text("{truncated")
    assert reusable(p, "x") is None
