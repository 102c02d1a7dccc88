#!/usr/bin/env python
"""Sanity check of the whole pipeline on real data: train on the two real COCO val2017 images
of ../shared/data/coco_panoptic_sample (official panoptic ground truth, 133 categories) and
evaluate on the same two images. A correct pipeline memorizes them (aim: PQ >= 80).

    python tools/overfit_check.py [--sample-dir ../shared/data/coco_panoptic_sample]
                                  [--output output/overfit] [--opts K V ...]

Config: configs/COCO-PanopticSegmentation/jsis_R18_C4_overfit_2images.yaml.

Too slow for CI (minutes on a 2-core CPU); the result is recorded in docs/RESULTS.md.
"""

import argparse
import json
import os
import sys

import jsis_d2  # noqa: F401
from jsis_d2.data.datasets import register_panoptic_dataset
from jsis_d2.engine.launcher import main as launch_main
from jsis_d2.engine.report import format_summary, summarize_results

from detectron2.engine import default_argument_parser

CONFIG = "configs/COCO-PanopticSegmentation/jsis_R18_C4_overfit_2images.yaml"
NAME = "jsis_coco_sample_overfit"  # the config's DATASETS.TRAIN and TEST


def main(argv=None):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--sample-dir", default=os.path.join(here, "..", "shared", "data", "coco_panoptic_sample")
    )
    p.add_argument("--output", default="output/overfit")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = p.parse_args(argv)
    d = os.path.abspath(args.sample_dir)
    json_file = os.path.join(d, "panoptic_val2017_sample.json")
    if not os.path.isfile(json_file):
        sys.stderr.write(f"overfit_check: error: {json_file} not found (--sample-dir)\n")
        return 2
    register_panoptic_dataset(
        NAME, os.path.join(d, "images"), os.path.join(d, "panoptic"), json_file, categories=None
    )
    train_args = default_argument_parser().parse_args(
        ["--config-file", os.path.join(here, CONFIG), "--resume", "OUTPUT_DIR", args.output]
        + list(args.opts)
    )
    results = launch_main(train_args)
    summary = summarize_results(results)
    text = format_summary(summary, title="overfit check: 2 real COCO images (train = eval)")
    with open(os.path.join(args.output, "overfit_metrics.json"), "w") as f:
        json.dump({"summary": summary, "results": results}, f, indent=2, default=float)
    with open(os.path.join(args.output, "overfit_metrics.txt"), "w") as f:
        f.write(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
