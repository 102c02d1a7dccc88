"""JSISCheckpointer: atomic saves, and resume from the newest readable checkpoint when the
``last_checkpoint`` tag is empty or names a torn file (what a kill mid-save used to leave)."""

import errno
import os

import pytest
import torch
from torch import nn

from jsis_d2.engine.checkpoint import JSISCheckpointer
from jsis_d2.engine.checks import UsageError, checkpoint_problem
from jsis_d2.utils.atomic import atomic_open


@pytest.fixture
def ckpt_dir(tmp_path):
    """A run folder with two good checkpoints, model_0000001 (weights 1) then model_final
    (weights 2), and the tag naming model_final."""
    model = nn.Linear(2, 2)
    ck = JSISCheckpointer(model, str(tmp_path))
    for name, value in (("model_0000001", 1.0), ("model_final", 2.0)):
        nn.init.constant_(model.weight, value)
        ck.save(name, iteration=int(value))
    os.utime(tmp_path / "model_0000001.pth", (1e9, 1e9))  # older, whatever the clock says
    return tmp_path


@pytest.fixture
def log_lines(capture_log):
    return capture_log("jsis_d2.engine.checkpoint")


def _resume(folder):
    model = nn.Linear(2, 2)
    nn.init.zeros_(model.weight)
    extra = JSISCheckpointer(model, str(folder)).resume_or_load("", resume=True)
    return float(model.weight[0, 0].detach()), extra.get("iteration")


FILES = ["last_checkpoint", "model_0000001.pth", "model_final.pth"]


def test_save_writes_checkpoint_and_tag_without_temporary_files(ckpt_dir):
    assert sorted(os.listdir(ckpt_dir)) == FILES
    assert (ckpt_dir / "last_checkpoint").read_text() == "model_final.pth"
    assert _resume(ckpt_dir) == (2.0, 2)


def test_failed_save_leaves_no_partial_file(ckpt_dir, monkeypatch):
    """ENOSPC after part of the data was written: no new file, the old ones untouched."""
    before = (ckpt_dir / "model_final.pth").read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 some bytes of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    ck = JSISCheckpointer(nn.Linear(2, 2), str(ckpt_dir))
    with pytest.raises(OSError, match="No space left"):
        ck.save("model_0000003")
    with pytest.raises(OSError, match="No space left"):
        ck.save("model_final")  # over an existing file
    monkeypatch.undo()
    assert sorted(os.listdir(ckpt_dir)) == FILES
    assert (ckpt_dir / "model_final.pth").read_bytes() == before
    assert (ckpt_dir / "last_checkpoint").read_text() == "model_final.pth"


def test_zero_byte_checkpoint_named_by_tag_falls_back(ckpt_dir, log_lines):
    (ckpt_dir / "model_final.pth").write_bytes(b"")  # SIGKILL while it was written
    assert checkpoint_problem(str(ckpt_dir / "model_final.pth")) == "empty (0 bytes)"
    assert _resume(ckpt_dir) == (1.0, 1)
    assert any(
        "names model_final.pth, which is empty (0 bytes)" in m and "model_0000001.pth" in m
        for m in log_lines
    ), log_lines


def test_truncated_checkpoint_falls_back(ckpt_dir, log_lines):
    data = (ckpt_dir / "model_final.pth").read_bytes()
    (ckpt_dir / "model_final.pth").write_bytes(data[: len(data) // 2])
    assert "truncated" in checkpoint_problem(str(ckpt_dir / "model_final.pth"))
    assert _resume(ckpt_dir) == (1.0, 1)
    assert any("truncated" in m for m in log_lines)


def test_empty_tag_falls_back_to_newest(ckpt_dir, log_lines):
    (ckpt_dir / "last_checkpoint").write_text("")  # SIGKILL inside the tag write
    assert _resume(ckpt_dir) == (2.0, 2)
    assert any("last_checkpoint is empty" in m for m in log_lines)


def test_nothing_readable_is_a_clear_error(ckpt_dir):
    for name in ("model_final.pth", "model_0000001.pth"):
        (ckpt_dir / name).write_bytes(b"")
    with pytest.raises(UsageError, match="no other readable checkpoint"):
        _resume(ckpt_dir)


def test_atomic_open_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(path, "w") as f:
            f.write("half of the new")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
    with atomic_open(path, "w") as f:
        f.write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["f.txt"]
