"""One run per folder (jsis_d2.utils.folder_lock): a second process is refused in one line
naming the folder and the holder's pid; a SIGKILLed holder leaves nothing stuck."""

import os
import signal
import subprocess
import sys

import pytest

from jsis_d2.utils.folder_lock import FolderBusyError, acquire_folder, hold_folder

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDER = (
    "import sys, time\n"
    "from jsis_d2.utils.folder_lock import acquire_folder\n"
    "acquire_folder(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def holder():
    """``holder(folder)`` starts another process that locks ``folder`` and sleeps; returns
    the Popen (killed at the end of the test)."""
    procs = []

    def start(folder):
        p = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
        )
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_second_process_is_refused_and_a_kill_frees_the_folder(tmp_path, holder):
    p = holder(tmp_path)
    with pytest.raises(FolderBusyError) as e:
        acquire_folder(tmp_path, "OUTPUT_DIR")
    assert str(e.value).startswith(f"OUTPUT_DIR {tmp_path} is in use by another run (pid {p.pid}")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with hold_folder(tmp_path, "OUTPUT_DIR"):  # not stuck
        with hold_folder(tmp_path, "OUTPUT_DIR"):  # re-entrant in one process
            pass
    # released after the outermost hold (lock file removed): another process can take it
    assert not (tmp_path / ".jsis_d2.lock").exists()
    holder(tmp_path)


def test_train_net_run_demo_and_generator_refuse_a_held_folder(
    tmp_path, holder, capsys, isolated_logs
):
    from jsis_d2.engine.launcher import run

    out = tmp_path / "out"
    p = holder(out)
    argv = ["--config-file", "configs/quick/jsis_R18_C4_quick.yaml", "OUTPUT_DIR", str(out)]
    argv += ["DATASETS.TEST", "()"]  # the default dataset need not exist for these checks
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"train_net: error: OUTPUT_DIR {out} is in use by another run (pid {p.pid} on "
        f"{os.uname().nodename}; lock file {out}/.jsis_d2.lock): wait for it to end, or choose "
        "another OUTPUT_DIR\n"
    )
    assert sorted(os.listdir(out)) == [".jsis_d2.lock"]  # nothing written

    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    try:
        import make_synthetic_dataset
        import run_demo
    finally:
        sys.path.pop(0)
    assert run_demo.main(["--quick", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"run_demo: error: --output {out} is in use by another run (pid {p.pid}")
    assert err.count("\n") == 1

    root = tmp_path / "syn"
    p2 = holder(root)
    assert make_synthetic_dataset.main(["--root", str(root), "--num-train", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"make_synthetic_dataset: error: dataset root {root} is in use by another run (pid {p2.pid}"
    )
    assert sorted(os.listdir(root)) == [".jsis_d2.lock"]

    # A killed holder: the next run goes past the lock (to its next check), and removes the
    # hidden temporary of a save that was killed (only the run holding the folder may).
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    (out / ".model_0000001.pth.tmp-x1y2").write_bytes(b"half a checkpoint")
    (out / "model_0000001.pth").write_bytes(b"the user's")
    assert run(["--eval-only"] + argv) == 2
    assert "--eval-only needs MODEL.WEIGHTS" in capsys.readouterr().err
    assert not (out / ".model_0000001.pth.tmp-x1y2").exists()
    assert (out / "model_0000001.pth").read_bytes() == b"the user's"
