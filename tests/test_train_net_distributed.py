"""tools/train_net.py across processes: Detectron2's ``launch`` with gloo on CPU, on 127.0.0.1.

Needs a detectron2 whose ``launch`` runs CPU processes (the official stack, `make test
DETECTRON2=official`; CI runs both stacks). On detectron2 0.6 the same command must fail
with one line naming the stack to use (last test).

Each job trains the quick R18 config (64x64) for 4 iterations on the built-in
``jsis_synthetic_{train,val}`` names, found through DETECTRON2_DATASETS: the spawned workers
register datasets when they import jsis_d2, so a name registered only in the test process
would not reach them.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from jsis_d2.data.datasets import make_synthetic_datasets
from jsis_d2.engine.distributed import launch_supports_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/quick/jsis_R18_C4_quick.yaml")
TRAIN_NET = os.path.join(ROOT, "tools/train_net.py")
TIMEOUT = 600

needs_cpu_launch = pytest.mark.skipif(
    not launch_supports_cpu(),
    reason="detectron2 0.6 has no CPU launch: runs on the official stack (CI runs both)",
)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("d2datasets"))
    make_synthetic_datasets(
        os.path.join(root, "jsis_synthetic"), num_train=4, num_val=2, image_size=64, register=False
    )
    return root


def _cmd(out, *flags, opts=()):
    return [
        sys.executable,
        TRAIN_NET,
        "--config-file",
        CONFIG,
        *flags,
        "OUTPUT_DIR",
        str(out),
        "SOLVER.MAX_ITER",
        "4",
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "SOLVER.STEPS",
        "(3,)",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SEED",
        "7",
        "DATALOADER.NUM_WORKERS",
        "0",
        *opts,
    ]


def _env(datasets_root):
    return dict(os.environ, DETECTRON2_DATASETS=datasets_root, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


def _run(cmd, datasets_root):
    p = subprocess.run(
        cmd, env=_env(datasets_root), capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )
    return p


def _ok(p):
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-5000:])


def _evals(out):
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    return rows, [r for r in rows if "panoptic_seg/PQ" in r]


@needs_cpu_launch
def test_two_processes_train_in_sync_and_evaluate_like_one(datasets_root, tmp_path):
    out = tmp_path / "ddp"
    url = f"tcp://127.0.0.1:{_free_port()}"
    p = _run(_cmd(out, "--num-gpus", "2", "--dist-url", url), datasets_root)
    _ok(p)
    log = (out / "log.txt").read_text()
    assert "All 2 ranks end training with identical weights" in log
    assert "World size: 2" in log or "world size: 2" in log.lower()
    # rank 0 alone writes checkpoints and metrics; rank 1 only its own log
    for f in (
        "model_0000001.pth",
        "model_0000003.pth",
        "model_final.pth",
        "last_checkpoint",
        "metrics.json",
        "config.yaml",
        "log.txt.rank1",
    ):
        assert (out / f).is_file(), f
    assert "Saving checkpoint" not in (out / "log.txt.rank1").read_text()
    rows, evals = _evals(out)
    iters = [r["iteration"] for r in rows if "total_loss" in r]
    assert iters == sorted(set(iters)) and iters[-1] == 3, iters  # one writer, no repeats
    assert len(evals) == 1

    # The gathered evaluation (2 ranks, 1 val image each) equals one process's on the same
    # weights.
    single = tmp_path / "single"
    p = _run(
        _cmd(single, "--eval-only", opts=("MODEL.WEIGHTS", str(out / "model_final.pth"))),
        datasets_root,
    )
    _ok(p)
    with open(single / "eval_results.json") as f:
        one = json.load(f)["results"]
    flat = {f"{task}/{k}": v for task, r in one.items() for k, v in r.items()}
    compared = [k for k in flat if k in evals[0]]
    assert "panoptic_seg/PQ" in compared and "sem_seg/mIoU" in compared
    for k in compared:
        assert evals[0][k] == pytest.approx(flat[k], abs=1e-9, nan_ok=True), k

    # --resume of the 2-process run from its mid-run checkpoint
    os.remove(out / "model_final.pth")
    os.remove(out / "model_0000003.pth")
    (out / "last_checkpoint").write_text("model_0000001.pth")
    p = _run(
        _cmd(out, "--num-gpus", "2", "--dist-url", f"tcp://127.0.0.1:{_free_port()}", "--resume"),
        datasets_root,
    )
    _ok(p)
    log = (out / "log.txt").read_text()
    assert "training continues at iteration 2 of 4" in log
    assert (out / "model_final.pth").is_file()
    assert log.count("All 2 ranks end training with identical weights") == 2


@needs_cpu_launch
def test_two_machines_on_localhost(datasets_root, tmp_path):
    """Two separate launcher processes, one rank each, joined through --dist-url."""
    out = tmp_path / "two_machines"
    url = f"tcp://127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            _cmd(
                out,
                "--num-gpus",
                "1",
                "--num-machines",
                "2",
                "--machine-rank",
                str(r),
                "--dist-url",
                url,
            ),
            env=_env(datasets_root),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    results = [p.communicate(timeout=TIMEOUT) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, (stdout[-2000:], stderr[-4000:])
    log = (out / "log.txt").read_text()
    assert "All 2 ranks end training with identical weights" in log
    assert (out / "model_final.pth").is_file() and (out / "log.txt.rank1").is_file()


@needs_cpu_launch
def test_worker_error_is_one_line_with_exit_code_2(datasets_root, tmp_path):
    p = _run(
        _cmd(
            tmp_path / "bad",
            "--num-gpus",
            "2",
            "--dist-url",
            f"tcp://127.0.0.1:{_free_port()}",
            opts=("DATASETS.TRAIN", "('nope',)"),
        ),
        datasets_root,
    )
    assert p.returncode == 2, p.stderr[-4000:]
    assert "Traceback" not in p.stderr, p.stderr[-4000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("train_net: error:")]
    assert len(errors) == 1 and "unknown dataset 'nope'" in errors[0], p.stderr[-2000:]


@pytest.mark.skipif(launch_supports_cpu(), reason="this detectron2 has the CPU launch")
def test_detectron2_v06_refuses_cpu_processes_naming_the_official_stack(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            TRAIN_NET,
            "--config-file",
            CONFIG,
            "--num-gpus",
            "2",
            "OUTPUT_DIR",
            str(tmp_path / "x"),
        ],
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
    assert p.returncode == 2, p.stderr[-3000:]
    assert p.stderr.strip().count("\n") == 0, p.stderr
    assert "make setup DETECTRON2=official" in p.stderr and "v0.6" in p.stderr
    assert not (tmp_path / "x").exists()
