"""tarot.fileio.write_text_atomic: whole file or the old one, never a partial one, and no temporaries left."""

import pytest
from tarot.fileio import write_text_atomic


def test_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    p = write_text_atomic(tmp_path / "a" / "b.txt", "first")
    assert p.read_text() == "first"
    write_text_atomic(p, "second")
    assert p.read_text() == "second" and [x.name for x in p.parent.iterdir()] == ["b.txt"]


def test_permissions_follow_the_umask_like_a_plain_write(tmp_path):
    import os

    plain_file = tmp_path / "plain.txt"
    plain_file.write_text("x")
    p = write_text_atomic(tmp_path / "atomic.txt", "x")
    assert os.stat(p).st_mode & 0o777 == os.stat(plain_file).st_mode & 0o777


def test_failed_write_keeps_the_old_file(tmp_path):
    p = write_text_atomic(tmp_path / "c.txt", "old")

    with pytest.raises(TypeError):
        write_text_atomic(p, 123)  # not text: nothing replaced
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["c.txt"]


def test_save_torch_atomic_writes_whole_files_and_leaves_no_temporary(tmp_path):
    import torch
    from tarot.fileio import save_torch_atomic

    path = save_torch_atomic({"w": torch.arange(3)}, tmp_path / "sub" / "state.pt")
    assert torch.equal(torch.load(path)["w"], torch.arange(3))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_torch_atomic({"bad": Unpicklable()}, path)
    assert torch.equal(torch.load(path)["w"], torch.arange(3))  # the previous file is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.pt"]
