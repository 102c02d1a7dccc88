#!/usr/bin/env python
"""The GPU check behind dev/gpu_check.sh: one JSON with everything a lent GPU should tell us.

    python dev/gpu_check.py --out FILE [--cpu] [--train-iters N] [--skip-tests]

Sections (each timed, each failure recorded in the JSON instead of ending the run):

* ``env``: torch / CUDA / GPU / detectron2 versions, bf16 support, nvcc.
* ``tests``: ``pytest -q tests -k cuda`` (the CUDA tests; they skip without a GPU).
* ``train``: R50-C4 (``configs/Base-JSIS-R50-C4.yaml``, GN, random init) on the synthetic
  training split at 400x400, batch 4, SOLVER.AMP fp16 and bf16 (:class:`Trainer`), after
  warm-up: iterations/s and peak GPU memory.
* ``inference``: R50-C4 random weights (100 proposals, 100 detections, K=133/T=80), one
  image at 400x400 and 512x1024, TEST.PRECISION float32 / bfloat16 / float16: latency
  (synchronized, median) and peak memory.
* ``joint``: JSIS-Net vs the instance-only + semantic-only networks (the ``joint``
  benchmark's settings) on the device: inference and train-step time and peak memory.

``--cpu``: the same code path on the CPU with tiny sizes (R18, 64x64, bf16 only), so the
script can be checked on a machine without a GPU. Numbers from it mean nothing.
"""

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch

from jsis_d2.utils.atomic import atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # run with PYTHONPATH=REPO

logger = logging.getLogger("gpu_check")


def _settings(cpu):
    if cpu:
        return {
            "device": "cpu",
            "depth": 18,
            "train_size": (64, 64),
            "sizes": [(64, 64)],
            "amp": ["bfloat16"],
            "test_precisions": ["float32", "bfloat16"],
            "extra": ["MODEL.RESNETS.WIDTH_PER_GROUP", 8],
            "proposals": 8,
            "detections": 5,
            "roi_batch": 8,
            "post_nms_train": 16,
            "repeats": 2,
            "num_train": 8,
            "image_size": 64,
        }
    return {
        "device": "cuda",
        "depth": 50,
        "train_size": (400, 400),
        "sizes": [(400, 400), (512, 1024)],
        "amp": ["float16", "bfloat16"],
        "test_precisions": ["float32", "bfloat16", "float16"],
        "extra": [],
        "proposals": 100,
        "detections": 100,
        "roi_batch": 64,
        "post_nms_train": 256,
        "repeats": 10,
        "num_train": 64,
        "image_size": 128,
    }


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device):
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(device):
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    from benchmarks.common import peak_rss_mb

    return peak_rss_mb()


def section_env(s):
    import detectron2

    out = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "detectron2": detectron2.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
    }
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError as e:
        out["torchvision"] = f"missing: {e}"
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["bf16_supported"] = torch.cuda.is_bf16_supported()
        out["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    else:
        from jsis_d2.precision import cpu_bf16_support

        out["cpu_bf16"] = cpu_bf16_support()
    try:
        nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=30)
        out["nvcc"] = nvcc.stdout.strip().splitlines()[-1] if nvcc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        out["nvcc"] = None
    return out


def section_tests(s):
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "tests", "-k", "cuda or CUDA"]
    t0 = time.perf_counter()
    p = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    tail = (p.stdout + p.stderr).strip().splitlines()[-15:]
    return {
        "command": " ".join(cmd[2:]),
        "returncode": p.returncode,
        "summary": tail[-1:],
        "tail": tail,
        "seconds": time.perf_counter() - t0,
    }


def _synthetic(s, tmp):
    from jsis_d2.data.datasets import make_synthetic_datasets, register_synthetic_datasets

    root = os.path.join(tmp, "syn")
    make_synthetic_datasets(
        root, num_train=s["num_train"], num_val=2, image_size=s["image_size"], register=False
    )
    names = {"train": "jsis_gpucheck_train", "val": "jsis_gpucheck_val"}
    register_synthetic_datasets(root, names=names)
    return names


def section_train(s, iters, tmp):
    from jsis_d2.config import setup_cfg
    from jsis_d2.engine.trainer import Trainer

    names = _synthetic(s, tmp)
    out = {}
    for dtype in s["amp"]:
        opts = [
            "MODEL.WEIGHTS",
            "",
            "MODEL.DEVICE",
            s["device"],
            "MODEL.RESNETS.DEPTH",
            s["depth"],
            "MODEL.RESNETS.NORM",
            "GN",
            "MODEL.BACKBONE.FREEZE_AT",
            0,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            9,
            "MODEL.ROI_HEADS.NUM_CLASSES",
            4,
            "INPUT.JSIS.FIXED_SIZE",
            list(s["train_size"]),
            "SOLVER.IMS_PER_BATCH",
            4,
            "SOLVER.BASE_LR",
            0.01,
            "SOLVER.MAX_ITER",
            iters,
            "SOLVER.STEPS",
            [],
            "SOLVER.WARMUP_ITERS",
            5,
            "SOLVER.CHECKPOINT_PERIOD",
            10**9,
            "SOLVER.AMP.ENABLED",
            True,
            "SOLVER.AMP.PRECISION",
            dtype,
            "DATASETS.TRAIN",
            (names["train"],),
            "DATASETS.TEST",
            (),
            "DATALOADER.NUM_WORKERS",
            0 if s["device"] == "cpu" else 4,
            "OUTPUT_DIR",
            os.path.join(tmp, f"train_{dtype}"),
            "SEED",
            0,
        ] + s["extra"]
        if s["depth"] in (18, 34):
            opts += ["MODEL.RESNETS.RES2_OUT_CHANNELS", 64]
        cfg = setup_cfg(os.path.join(REPO, "configs/Base-JSIS-R50-C4.yaml"), opts)
        _reset_peak(s["device"])
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        t0 = time.perf_counter()
        trainer.train()
        _sync(s["device"])
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in open(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))]
        times = [r["time"] for r in rows if "time" in r]
        losses = [r["total_loss"] for r in rows if "total_loss" in r]
        out[dtype] = {
            "iters": iters,
            "step_trainer": type(trainer._trainer).__name__,
            "wall_s": wall,
            "iters_per_s_wall": iters / wall,
            "iters_per_s_median": 1 / statistics.median(times) if times else None,
            "peak_mib": _peak_mib(s["device"]),
            "last_total_loss": losses[-1:],
            "losses_finite": all(x == x and abs(x) != float("inf") for x in losses),
        }
        logger.info("train %s: %s", dtype, out[dtype])
    return out


def _build(s, size, branches=("semantic", "instance"), extra=()):
    from benchmarks.common import build_jsis
    from benchmarks.joint import model_kwargs

    torch.manual_seed(0)
    return build_jsis(**model_kwargs(s, size, branches, ["MODEL.DEVICE", s["device"], *extra]))


def _timed(s, fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    _sync(s["device"])
    _reset_peak(s["device"])
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(s["device"])
        ts.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "peak_mib": _peak_mib(s["device"])}


def _infer_fn(model, inputs):
    model.eval()

    def f():
        with torch.no_grad():
            return model(inputs)

    return f


def _train_fn(model, inputs):
    from detectron2.utils.events import EventStorage

    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    storage = EventStorage(0)

    def f():
        with storage:
            loss = sum(model(inputs).values())
            opt.zero_grad()
            loss.backward()
            opt.step()

    return f


def section_inference(s):
    from benchmarks.common import random_inputs

    out = {}
    for h, w in s["sizes"]:
        for p in s["test_precisions"]:
            model, cfg = _build(s, (h, w), extra=["TEST.PRECISION", p])
            inputs = random_inputs(
                h,
                w,
                1,
                num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                num_things=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            )
            out[f"{h}x{w}/{p}"] = _timed(s, _infer_fn(model, inputs), s["repeats"])
            logger.info("inference %dx%d %s: %s", h, w, p, out[f"{h}x{w}/{p}"])
            del model
    return out


def section_joint(s):
    from benchmarks.common import random_inputs

    nets = {"joint": ("semantic", "instance"), "instance": ("instance",), "semantic": ("semantic",)}
    out = {}
    for h, w in s["sizes"]:
        for mode in ("infer", "train"):
            row = {}
            for name, branches in nets.items():
                model, cfg = _build(s, (h, w), branches)
                inputs = random_inputs(
                    h,
                    w,
                    1,
                    train=(mode == "train"),
                    num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                    num_things=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                )
                fn = (_infer_fn if mode == "infer" else _train_fn)(model, inputs)
                row[name] = _timed(
                    s, fn, s["repeats"] if mode == "infer" else max(2, s["repeats"] // 2)
                )
                del model
            for k in ("median_s", "peak_mib"):
                row[f"joint_over_two_{k}"] = row["joint"][k] / (
                    row["instance"][k] + row["semantic"][k]
                )
            out[f"{h}x{w}/{mode}"] = row
            logger.info("joint %dx%d %s: %s", h, w, mode, row)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU, tiny sizes")
    ap.add_argument("--train-iters", type=int, default=None, help="default 60 (cpu: 3)")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import jsis_d2  # noqa: F401

    if not args.cpu and not torch.cuda.is_available():
        logger.error(
            "gpu_check: CUDA is not available (torch %s); use --cpu for a dry run",
            torch.__version__,
        )
        return 2
    s = _settings(args.cpu)
    if args.cpu:
        torch.set_num_threads(1)  # a shared 2-core machine: 1 thread is the least noisy
    result = {
        "mode": "cpu-dry-run" if args.cpu else "gpu",
        "settings": {k: v for k, v in s.items() if k != "extra"},
        "sections": {},
    }
    iters = args.train_iters or (3 if args.cpu else 60)
    with tempfile.TemporaryDirectory() as tmp:
        steps = [
            ("env", lambda: section_env(s)),
            ("tests", None if args.skip_tests else lambda: section_tests(s)),
            ("train", lambda: section_train(s, iters, tmp)),
            ("inference", lambda: section_inference(s)),
            ("joint", lambda: section_joint(s)),
        ]
        for name, fn in steps:
            if fn is None:
                continue
            t0 = time.perf_counter()
            try:
                result["sections"][name] = {"ok": True, "result": fn()}
            except Exception as e:  # record and go on: one JSON with all that worked
                logger.error("gpu_check: section %s failed: %s", name, e)
                result["sections"][name] = {
                    "ok": False,
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            result["sections"][name]["seconds"] = time.perf_counter() - t0
            _write(args.out, result)  # after each section: a killed run keeps what it had
    ok = all(v["ok"] for v in result["sections"].values())
    logger.info("gpu_check: wrote %s (%s)", args.out, "all sections ok" if ok else "FAILURES")
    return 0 if ok else 1


def _write(path, result):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
