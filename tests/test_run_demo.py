"""tools/run_demo.py on bad input: one error line (exit 2), nothing of the user's touched.
(Its full flow is `make demo`; --quick runs it end to end in ~30 s, not part of the suite.)"""

import importlib.util
import os

import pytest

from jsis_d2.data.datasets import make_synthetic_datasets, register_synthetic_datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("isolated_logs")


def _load():
    path = os.path.join(REPO, "tools", "run_demo.py")
    spec = importlib.util.spec_from_file_location("run_demo", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dataset_made_with_other_arguments_is_left_alone(tmp_path, capsys):
    run_demo = _load()
    try:
        make_synthetic_datasets(str(tmp_path / "synthetic"), num_train=3, num_val=4, image_size=64)
        before = sorted(os.listdir(tmp_path / "synthetic" / "train" / "images"))
        assert run_demo.main(["--quick", "--output", str(tmp_path)]) == 2
    finally:
        register_synthetic_datasets()
    err = capsys.readouterr().err
    assert "run_demo: error:" in err and "num_images 3 on disk vs 8 asked" in err
    assert "--overwrite-dataset" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path / "synthetic" / "train" / "images")) == before


def test_missing_initial_weights(tmp_path, capsys):
    run_demo = _load()
    missing = str(tmp_path / "R-18.pth")
    try:
        rc = run_demo.main(
            ["--quick", "--output", str(tmp_path / "out"), "--opts", "MODEL.WEIGHTS", missing]
        )
    finally:
        register_synthetic_datasets()
    assert rc == 2
    err = capsys.readouterr().err
    assert f"run_demo: error: MODEL.WEIGHTS file not found: {missing}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"supported": True, "avx512_bf16": True, "amx_bf16": False}, "BF16_CONFIG"),
        ({"supported": True, "avx512_bf16": False, "amx_bf16": True}, "BF16_CONFIG"),
        # oneDNN "supports" bf16 on AVX512 CPUs without it by emulation: slower than fp32
        ({"supported": True, "avx512_bf16": False, "amx_bf16": False}, "DEFAULT_CONFIG"),
        ({"supported": False, "avx512_bf16": True, "amx_bf16": False}, "DEFAULT_CONFIG"),
    ],
)
def test_default_config_is_bf16_only_where_the_cpu_has_it(monkeypatch, flags, expected):
    run_demo = _load()
    monkeypatch.setattr(run_demo, "cpu_bf16_support", lambda: dict(flags, capability="x"))
    assert run_demo.default_config() == getattr(run_demo, expected)
    assert os.path.isfile(os.path.join(REPO, run_demo.default_config()))


def test_bad_arguments_and_unwritable_folders_are_one_line(tmp_path, capsys, monkeypatch):
    run_demo = _load()
    try:
        assert run_demo.main(["--quick", "--output", str(tmp_path / "a"), "--quick-images", "0"])
        err = capsys.readouterr().err
        assert "run_demo: error: synthetic split 'train' needs num_images >= 1, got 0" in err
        argv = ["--quick", "--output", str(tmp_path / "b"), "--opts", "DATASETS.TEST", "()"]
        assert run_demo.main(argv) == 2
        assert "run_demo: error: DATASETS.TEST is empty" in capsys.readouterr().err
    finally:
        register_synthetic_datasets()
    # a folder it may not write (read-only mount, another user's): the tests run as root,
    # for whom chmod does not forbid anything, so the OS's answer is simulated
    import errno

    import jsis_d2.utils.folder_lock as folder_lock

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(folder_lock.os, "makedirs", denied)
    assert run_demo.main(["--quick", "--output", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err
    assert err == f"run_demo: error: cannot write {tmp_path / 'ro'}: Permission denied\n"
