#!/usr/bin/env python
"""Export a trained JSIS-Net WHOLE (network, resize, mask paste, panoptic merge) to ONNX or
TorchScript, with a JSON sidecar, and check the exported model against PyTorch.

    python tools/export_model.py --config-file CFG --output DIR [--format onnx|torchscript] \
        [--sample-image IMG] [--overwrite] --opts MODEL.WEIGHTS model_final.pth [KEY VALUE ...]

Writes DIR/model.onnx (or DIR/model.ts) and DIR/model.json (see docs/EXPORT.md). Refuses an
empty MODEL.WEIGHTS (random weights) and checkpoints that do not fit the model, and a non-empty
DIR that is not a previous export (unless --overwrite). Then runs the exported file on one
image (--sample-image, else the first image of DATASETS.TEST[0], else a synthetic one) and
ends with one error line and exit code 2 if it disagrees with PyTorch.
"""

import argparse
import logging
import sys

import jsis_d2  # noqa: F401
from jsis_d2.config import ConfigError, setup_cfg
from jsis_d2.engine.checks import UsageError
from jsis_d2.export.exporter import MODEL_FILES, export_model

from detectron2.utils.logger import setup_logger

logger = logging.getLogger("jsis_d2.export_model")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--output", required=True, metavar="DIR", help="export folder")
    p.add_argument("--format", choices=sorted(MODEL_FILES), default="onnx")
    p.add_argument("--sample-image", metavar="IMG", help="image for the agreement check")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty folder")
    p.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides (put last)"
    )
    return p


def main(argv=None):
    """Parse arguments, export, turn known failures into one ``export_model: error:`` line."""
    args = get_parser().parse_args(argv)
    setup_logger(name="jsis_d2")
    try:
        cfg = setup_cfg(args.config_file, args.opts)
        result = export_model(
            cfg,
            args.output,
            fmt=args.format,
            overwrite=args.overwrite,
            sample_image=args.sample_image,
            config_file=args.config_file,
        )
    except (ConfigError, UsageError, FileNotFoundError) as e:
        sys.stderr.write(f"export_model: error: {e}\n")
        return 2
    check = result["check"]
    logger.info(
        "exported %s/%s: category maps agree on %.3f%% of pixels, %d segments",
        args.output,
        result["model_file"],
        100 * check["pixel_agreement"],
        check["segments"][1],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
