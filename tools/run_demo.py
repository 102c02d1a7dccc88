#!/usr/bin/env python
"""The main job (``make demo``): synthetic dataset -> train JSIS-Net from scratch on CPU ->
evaluate on the synthetic validation split -> metrics, loss curves and Figure-1 pictures.

    python tools/run_demo.py [--output output/demo] [--config-file CFG] [--quick] [--opts K V ...]

Writes to OUTPUT: ``metrics.json`` / ``metrics.txt`` (PQ/SQ/RQ All/Things/Stuff, mIoU,
AP@0.5, RPN mean recall), ``loss_curves.png``, ``figures/*.png`` (image | panoptic /
semantic | instance, with category names), plus Detectron2's usual run folder (log.txt,
metrics.json lines, TensorBoard events, checkpoints, config.yaml). Re-running continues an
existing run in OUTPUT (``--resume`` semantics) and re-evaluates it.
"""

import argparse
import errno
import json
import logging
import os
import sys
import time

import cv2

import jsis_d2  # noqa: F401
from jsis_d2.config import ConfigError, setup_cfg
from jsis_d2.data.datasets import make_synthetic_datasets
from jsis_d2.data.image_io import read_image
from jsis_d2.data.synthetic import SyntheticSplitMismatch
from jsis_d2.engine.checks import UsageError
from jsis_d2.engine.launcher import INTERRUPTED, describe_failure
from jsis_d2.engine.launcher import main as launch_main
from jsis_d2.engine.report import (
    format_summary,
    plot_loss_curves,
    read_metrics_json,
    summarize_results,
)
from jsis_d2.precision import cpu_bf16_support
from jsis_d2.predictor import JSISPredictor
from jsis_d2.utils.folder_lock import hold_folder
from jsis_d2.visualization import draw_four_panel

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser

DEFAULT_CONFIG = "configs/Synthetic/jsis_R18_C4_scratch_cpu.yaml"
BF16_CONFIG = "configs/Synthetic/jsis_R18_C4_scratch_cpu_bf16.yaml"
QUICK_CONFIG = "configs/quick/jsis_R18_C4_quick.yaml"
logger = logging.getLogger("jsis_d2.run_demo")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output", default="output/demo", help="output folder (OUTPUT_DIR)")
    p.add_argument(
        "--config-file",
        default=None,
        help=f"default {BF16_CONFIG} where the CPU has native bf16, else {DEFAULT_CONFIG}",
    )
    p.add_argument(
        "--quick", action="store_true", help=f"tiny run for smoke tests ({QUICK_CONFIG})"
    )
    p.add_argument("--num-figures", type=int, default=6, help="validation images to draw")
    p.add_argument("--quick-images", type=int, default=8, help="training images in --quick")
    p.add_argument(
        "--overwrite-dataset",
        action="store_true",
        help="regenerate the synthetic dataset when it exists with other arguments",
    )
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    return p


def write_figures(cfg, out_dir, num):
    """Four-panel pictures of the first ``num`` images of DATASETS.TEST[0]."""
    name = cfg.DATASETS.TEST[0]
    metadata = MetadataCatalog.get(name)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    predictor = JSISPredictor(cfg)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for d in DatasetCatalog.get(name)[:num]:
        bgr = read_image(d["file_name"], format="BGR")  # as DefaultPredictor takes it
        rgb = bgr[:, :, ::-1]
        vis = draw_four_panel(
            rgb,
            predictor(bgr),
            metadata,
            score_thresh=cfg.MODEL.JSIS.INSTANCE_SCORE_THRESH,
            scale=max(1.0, 256 / max(rgb.shape[:2])),
        )
        path = os.path.join(out_dir, os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png")
        cv2.imwrite(path, vis[:, :, ::-1])
        written.append(path)
    return written


def make_dataset(args):
    """The embedded default dataset (generated once, deterministic), or --quick's own."""
    try:
        if args.quick:  # a tiny set of its own, so the default dataset is left as it is
            make_synthetic_datasets(
                os.path.join(args.output, "synthetic"),
                num_train=args.quick_images,
                num_val=4,
                image_size=64,
                overwrite=args.overwrite_dataset,
            )
        else:  # $DETECTRON2_DATASETS/jsis_synthetic, reused when present
            make_synthetic_datasets(overwrite=args.overwrite_dataset)
    except SyntheticSplitMismatch:
        raise
    except ValueError as e:  # a folder the generator did not write, ...
        raise UsageError(str(e)) from e


def main(argv=None):
    """Parse arguments, run, turn known failures into one ``run_demo: error:`` line (exit 2)."""
    args = get_parser().parse_args(argv)
    try:
        with hold_folder(args.output, "--output"):  # one demo per output folder
            return run(args)
    except SyntheticSplitMismatch as e:
        other = "choose another --output" if args.quick else "set DETECTRON2_DATASETS elsewhere"
        sys.stderr.write(
            f"run_demo: error: {e.reason}; nothing was changed. Pass --overwrite-dataset to "
            f"regenerate it, or {other}.\n"
        )
    except (ConfigError, UsageError) as e:
        sys.stderr.write(f"run_demo: error: {e}\n")
    except KeyboardInterrupt:
        sys.stderr.write(f"run_demo: {INTERRUPTED} (run it again)\n")
        return 130
    except Exception as e:
        if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            sys.stderr.write(f"run_demo: error: cannot write {e.filename}: {e.strerror}\n")
            return 2
        failure = describe_failure(e, prog="run_demo")
        if failure is None:
            raise
        sys.stderr.write(failure[0] + "\n")
        return failure[1]
    return 2


def default_config() -> str:
    """The demo config for this CPU: the bf16 one where it computes bf16 natively (oneDNN's
    check plus AVX512-BF16 or AMX-BF16 in /proc/cpuinfo; elsewhere oneDNN would emulate bf16,
    slower than fp32), the fp32 one otherwise."""
    s = cpu_bf16_support()
    native = s["supported"] and (s["avx512_bf16"] or s["amx_bf16"])
    return BF16_CONFIG if native else DEFAULT_CONFIG


def run(args):
    """Dataset, training + evaluation, reports and pictures; returns 0."""
    config_file = args.config_file or (QUICK_CONFIG if args.quick else default_config())
    t0 = time.time()
    cfg = setup_cfg(config_file, list(args.opts) + ["OUTPUT_DIR", args.output])
    if not cfg.DATASETS.TEST:
        raise UsageError("DATASETS.TEST is empty: the demo evaluates and draws DATASETS.TEST[0]")
    make_dataset(args)

    # 2. Train (or continue) + the final evaluation, on Detectron2's engine.
    train_args = default_argument_parser().parse_args(
        ["--config-file", config_file, "--resume", "OUTPUT_DIR", args.output] + list(args.opts)
    )
    results = launch_main(train_args)
    t_train = time.time() - t0

    # 3. Reports.
    summary = summarize_results(results)
    record = {
        "config_file": config_file,
        "cpu_bf16": cpu_bf16_support(),  # what chose the default config
        "dataset": cfg.DATASETS.TEST[0],
        "wall_time_s": round(t_train, 1),
        "summary": summary,
        "results": results,
    }
    with open(os.path.join(args.output, "demo_metrics.json"), "w") as f:
        json.dump(record, f, indent=2, default=float)
    text = format_summary(summary, title=f"JSIS-Net on {cfg.DATASETS.TEST[0]} ({config_file})")
    with open(os.path.join(args.output, "demo_metrics.txt"), "w") as f:
        f.write(text + f"\nwall time (train + eval): {t_train:.0f} s\n")
    plot_loss_curves(
        read_metrics_json(os.path.join(args.output, "metrics.json")),
        os.path.join(args.output, "loss_curves.png"),
    )
    figs = write_figures(cfg, os.path.join(args.output, "figures"), args.num_figures)
    logger.info("\n%s", text)
    logger.info(
        "demo (%s) done in %.0f s: %s, %s, %d figures in %s",
        config_file,
        time.time() - t0,
        os.path.join(args.output, "demo_metrics.txt"),
        os.path.join(args.output, "loss_curves.png"),
        len(figs),
        os.path.join(args.output, "figures"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
