#!/usr/bin/env python
"""Which thing classes does a trained JSIS-Net confuse? The ROI head's confusion matrix over the
ground-truth boxes of a dataset. The boxes go straight to the box head (no RPN), so this
separates naming errors from detection errors.

    python tools/roi_confusion.py --config-file CFG --weights output/demo/model_final.pth \
        [--dataset jsis_synthetic_val] [--max-images 50] [--opts K V ...]

The dataset defaults to DATASETS.TEST[0]. Images go through the training mapper without
flips, so the boxes are the training targets. The table goes to stdout, and with --output
also to a JSON file.
"""

import argparse
import json
import sys

import jsis_d2  # noqa: F401  (registers the datasets and the meta-architecture)
from jsis_d2.config import ConfigError, setup_cfg
from jsis_d2.data import JSISDatasetMapper
from jsis_d2.engine.checks import UsageError, check_checkpoint_matches_model
from jsis_d2.evaluation.roi_confusion import format_roi_confusion, roi_confusion_matrix

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--weights", required=True, help="checkpoint (.pth) to load")
    p.add_argument("--dataset", help="registered dataset name (default DATASETS.TEST[0])")
    p.add_argument("--max-images", type=int, default=50)
    p.add_argument("--output", help="also write {'matrix', 'thing_classes', ...} as JSON here")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="jsis_d2")
    try:
        cfg = setup_cfg(args.config_file, list(args.opts) + ["INPUT.RANDOM_FLIP", "none"])
    except ConfigError as e:
        sys.stderr.write(f"roi_confusion: error: {e}\n")
        return 2
    name = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    if not name or name not in DatasetCatalog.list():
        sys.stderr.write(f"roi_confusion: error: unknown dataset {name!r} (--dataset)\n")
        return 2
    model = build_model(cfg)
    try:
        check_checkpoint_matches_model(model, args.weights)
    except UsageError as e:
        sys.stderr.write(f"roi_confusion: error: --weights: {e}\n")
        return 2
    DetectionCheckpointer(model).load(args.weights)
    mapper = JSISDatasetMapper(cfg, is_train=True)
    dicts = DatasetCatalog.get(name)[: args.max_images]
    conf = roi_confusion_matrix(model, (mapper(d) for d in dicts))
    things = MetadataCatalog.get(name).thing_classes
    text = format_roi_confusion(conf, things)
    sys.stdout.write(
        f"ROI head on the ground-truth boxes of {len(dicts)} images of {name}:\n\n{text}\n"
    )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(
                {
                    "dataset": name,
                    "weights": args.weights,
                    "num_images": len(dicts),
                    "thing_classes": list(things),
                    "matrix": conf.tolist(),
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
