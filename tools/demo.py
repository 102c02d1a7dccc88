#!/usr/bin/env python
"""Run a trained JSIS-Net on images, a folder or a video.

    python tools/demo.py --config-file CFG --input img.jpg [more.jpg ...] --output out/ \
        --opts MODEL.WEIGHTS output/demo/model_final.pth
    python tools/demo.py --config-file CFG --input folder/ --output out/ [--mode overlay] --opts ...
    python tools/demo.py --config-file CFG --video-input clip.mp4 --output out/clip.mp4 --opts ...

--mode four_panel (default for images): the paper's Figure 1 layout (image, panoptic,
semantic, instance). --mode overlay: the panoptic segmentation drawn over the image (always
used for videos). Category names come from the metadata of DATASETS.TEST[0].
"""
import argparse
import glob
import logging
import os
import sys

import cv2
import tqdm

import jsis_d2  # noqa: F401
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from jsis_d2.config import ConfigError, setup_cfg
from jsis_d2.predictor import JSISPredictor
from jsis_d2.visualization import draw_four_panel, draw_panoptic

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger("jsis_d2.demo")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--video-input", help="a video file")
    p.add_argument("--output", required=True, help="output folder (images) or file (video)")
    p.add_argument("--mode", choices=["four_panel", "overlay"], default="four_panel")
    p.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides (put last)"
    )
    return p


def expand_inputs(inputs):
    """Files, folders (their images, sorted) and globs -> list of image paths."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(
                os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTS)
            )
        elif os.path.isfile(item):
            paths.append(item)
        else:
            matched = sorted(glob.glob(os.path.expanduser(item)))
            if not matched:
                raise FileNotFoundError(f"--input {item!r}: no such file, folder or pattern")
            paths += matched
    return paths


def render(predictor, image_bgr_or_rgb, metadata, mode, input_format, score_thresh):
    rgb = image_bgr_or_rgb[:, :, ::-1] if input_format == "BGR" else image_bgr_or_rgb
    outputs = predictor(image_bgr_or_rgb)
    if mode == "overlay":
        return draw_panoptic(rgb, outputs, metadata)
    return draw_four_panel(rgb, outputs, metadata, score_thresh=score_thresh)


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="jsis_d2")
    try:
        cfg = setup_cfg(args.config_file, args.opts)
    except ConfigError as e:
        sys.stderr.write(f"demo: error: {e}\n")
        return 2
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    predictor = JSISPredictor(cfg)
    thresh = cfg.MODEL.JSIS.INSTANCE_SCORE_THRESH
    fmt = cfg.INPUT.FORMAT

    if args.video_input:
        cap = cv2.VideoCapture(args.video_input)
        if not cap.isOpened():
            sys.stderr.write(f"demo: error: cannot open video {args.video_input}\n")
            return 2
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        writer = None
        for _ in tqdm.tqdm(range(n) if n else iter(int, 1), desc="frames"):
            ok, frame_bgr = cap.read()
            if not ok:
                break
            frame = frame_bgr if fmt == "BGR" else frame_bgr[:, :, ::-1]
            vis = render(predictor, frame, metadata, "overlay", fmt, thresh)
            if writer is None:
                os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
                writer = cv2.VideoWriter(
                    args.output, cv2.VideoWriter_fourcc(*"mp4v"), fps, (vis.shape[1], vis.shape[0])
                )
            writer.write(vis[:, :, ::-1])
        cap.release()
        if writer is not None:
            writer.release()
        logger.info("wrote %s", args.output)
        return 0

    if not args.input:
        sys.stderr.write("demo: error: give --input or --video-input\n")
        return 2
    try:
        paths = expand_inputs(args.input)
    except FileNotFoundError as e:
        sys.stderr.write(f"demo: error: {e}\n")
        return 2
    os.makedirs(args.output, exist_ok=True)
    for path in tqdm.tqdm(paths, desc="images", disable=len(paths) < 2):
        image = read_image(path, format=fmt)
        vis = render(predictor, image, metadata, args.mode, fmt, thresh)
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        cv2.imwrite(out, vis[:, :, ::-1])
    logger.info("wrote %d picture(s) to %s", len(paths), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
