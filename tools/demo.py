#!/usr/bin/env python
"""Run a trained JSIS-Net on images, a folder or a video.

    python tools/demo.py --config-file CFG --input img.jpg [more.jpg ...] --output out/ \
        --opts MODEL.WEIGHTS output/demo/model_final.pth
    python tools/demo.py --config-file CFG --input folder/ --output out/ [--mode overlay] --opts ...
    python tools/demo.py --config-file CFG --video-input clip.mp4 --output out/clip.mp4 --opts ...

--mode four_panel (default for images): the paper's Figure 1 layout (image, panoptic,
semantic, instance). --mode overlay: the panoptic segmentation drawn over the image (always
used for videos). Category names come from the metadata of DATASETS.TEST[0].

Output names (images): ``<stem>.png`` under --output, with the inputs' folders kept below
their common parent folder (``a/x.jpg``, ``b/x.jpg`` -> ``a/x.png``, ``b/x.png``); inputs whose
stems clash in one folder keep their extension (``a/x.jpg``, ``a/x.png`` -> ``a/x.jpg.png``,
``a/x.png.png``). An input that cannot be read is skipped with a warning naming it; the run
then ends with one error line listing the skipped files and exit code 2.
"""

import argparse
import functools
import logging
import os
import sys

import cv2
import tqdm

import jsis_d2  # noqa: F401
from jsis_d2.config import ConfigError, setup_cfg
from jsis_d2.data.image_io import read_image
from jsis_d2.data.label_space import LabelSpace
from jsis_d2.engine.checks import (
    UsageError,
    check_checkpoint_label_space,
    check_device,
    check_weights_readable,
)
from jsis_d2.predictor import JSISPredictor
from jsis_d2.visualization import draw_four_panel, draw_panoptic
from jsis_runtime.errors import RuntimeUsageError
from jsis_runtime.inputs import IMAGE_EXTS, expand_inputs
from jsis_runtime.inputs import png_names_below_common_folder as output_names

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

#: Containers OpenCV writes with the "mp4v" codec used for videos.
VIDEO_EXTS = (".mp4", ".m4v", ".mov")
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


def render(predictor, image_bgr_or_rgb, metadata, mode, input_format, score_thresh):
    """One picture (uint8 RGB) of the model's output on one image in ``input_format``."""
    rgb = image_bgr_or_rgb[:, :, ::-1] if input_format == "BGR" else image_bgr_or_rgb
    outputs = predictor(rgb[:, :, ::-1])  # BGR, as DefaultPredictor takes it
    if mode == "overlay":
        return draw_panoptic(rgb, outputs, metadata)
    return draw_four_panel(rgb, outputs, metadata, score_thresh=score_thresh)


def check_video_output(video, output):
    """UsageError unless ``output`` is a new video file path: not the input itself, not a
    folder, an extension of :data:`VIDEO_EXTS`."""
    if os.path.isdir(output) or output.endswith(os.sep):
        raise UsageError(f"--output {output} is a folder; give a video file (e.g. out.mp4)")
    if not output.lower().endswith(VIDEO_EXTS):
        raise UsageError(
            f"--output {output}: unknown video extension; use one of {', '.join(VIDEO_EXTS)}"
        )
    if os.path.exists(output) and os.path.samefile(output, video):
        raise UsageError(f"--output {output} is the input video; give another file")


def check_output_parent(output):
    """UsageError when ``output`` cannot be a folder or file because a path above it is a
    file (``--output picture.png/out``)."""
    parent = os.path.dirname(os.path.abspath(output))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise UsageError(f"--output {output}: {parent} is a file, not a folder")


def dataset_metadata(cfg):
    """The metadata of DATASETS.TEST[0], where the category names come from; UsageError when
    it is not set, not registered or has no categories."""
    if not cfg.DATASETS.TEST:
        raise UsageError(
            "DATASETS.TEST is empty: the category names come from DATASETS.TEST[0]; set it to "
            "a dataset with the label space the model was trained on"
        )
    name = cfg.DATASETS.TEST[0]
    if name not in DatasetCatalog.list():
        raise UsageError(f"DATASETS.TEST: unknown dataset {name!r} (the category names' source)")
    metadata = MetadataCatalog.get(name)
    if getattr(metadata, "categories", None) is None:
        raise UsageError(f"DATASETS.TEST: dataset {name!r} has no jsis_d2 categories")
    return metadata


def run(args):
    """The demo for parsed ``args``; returns the exit code or raises a known error."""
    if not args.video_input and not args.input:
        raise UsageError("give --input or --video-input")
    check_output_parent(args.output)
    if args.video_input:
        check_video_output(args.video_input, args.output)
    elif os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"--output {args.output} is an existing file; give a folder for pictures")
    paths = [] if args.video_input else expand_inputs(args.input)
    if not args.video_input and not paths:
        raise UsageError(
            f"--input {' '.join(args.input)}: no image found ({', '.join(IMAGE_EXTS)})"
        )
    cfg = setup_cfg(args.config_file, args.opts)
    check_device(cfg)
    metadata = dataset_metadata(cfg)
    check_weights_readable(cfg.MODEL.WEIGHTS)
    check_checkpoint_label_space(
        cfg.MODEL.WEIGHTS, LabelSpace.from_metadata(metadata), cfg.DATASETS.TEST[0]
    )
    predictor = JSISPredictor(cfg)
    draw = functools.partial(
        render,
        predictor,
        metadata=metadata,
        input_format=cfg.INPUT.FORMAT,
        score_thresh=cfg.MODEL.JSIS.INSTANCE_SCORE_THRESH,
    )
    if args.video_input:
        return run_video(draw, args.video_input, args.output, cfg.INPUT.FORMAT)
    return run_images(draw, paths, args.output, args.mode, cfg.INPUT.FORMAT)


def run_video(draw, video, output, fmt):
    """Overlay every frame of ``video``; write an mp4 to ``output``."""
    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        raise UsageError(f"cannot open video {video}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    for _ in tqdm.tqdm(range(n) if n else iter(int, 1), desc="frames"):
        ok, frame_bgr = cap.read()
        if not ok:
            break
        vis = draw(frame_bgr if fmt == "BGR" else frame_bgr[:, :, ::-1], mode="overlay")
        if writer is None:
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            writer = cv2.VideoWriter(
                output, cv2.VideoWriter_fourcc(*"mp4v"), fps, (vis.shape[1], vis.shape[0])
            )
            if not writer.isOpened():
                raise UsageError(f"cannot write video {output} (OpenCV's VideoWriter refused it)")
        writer.write(vis[:, :, ::-1])
    cap.release()
    if writer is None:
        raise UsageError(f"video {video} has no frame that could be read; nothing written")
    writer.release()
    logger.info("wrote %s", output)
    return 0


def run_images(draw, paths, output, mode, fmt):
    """One picture per readable image in ``paths`` under ``output`` (:func:`output_names`);
    unreadable ones are skipped with a warning, then reported in one UsageError."""
    outputs = [os.path.join(output, n) for n in output_names(paths)]
    inputs = {os.path.realpath(p) for p in paths}
    for out in outputs:
        if os.path.realpath(out) in inputs:
            raise UsageError(f"--output {output}: the picture {out} would overwrite an input")
    skipped = []
    for path, out in tqdm.tqdm(list(zip(paths, outputs)), desc="images", disable=len(paths) < 2):
        try:
            image = read_image(path, format=fmt)
        except (OSError, ValueError, SyntaxError) as e:  # missing, unreadable, not an image,
            # over Pillow's pixel limit (read_image: UnsupportedImageError, a ValueError)
            logger.warning("skipping %s: cannot read it as an image (%s)", path, e)
            skipped.append(path)
            continue
        vis = draw(image, mode=mode)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if not cv2.imwrite(out, vis[:, :, ::-1]):
            raise UsageError(f"cannot write {out}")
    logger.info("wrote %d picture(s) to %s", len(paths) - len(skipped), output)
    if skipped:
        raise UsageError(
            f"{len(skipped)} input file(s) could not be read and were skipped: "
            + ", ".join(skipped[:5])
            + (", ..." if len(skipped) > 5 else "")
        )
    return 0


def main(argv=None):
    """Parse arguments, run, turn known failures into one ``demo: error:`` line (exit 2)."""
    args = get_parser().parse_args(argv)
    setup_logger(name="jsis_d2")
    try:
        return run(args)
    except (ConfigError, UsageError, RuntimeUsageError, FileNotFoundError) as e:
        sys.stderr.write(f"demo: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("demo: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
