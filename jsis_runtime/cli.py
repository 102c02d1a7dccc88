"""``tools/predict.py``: the arguments of both backends, the ONNX backend's run, and the parts
both backends share (image list, output folder, final JSON, the one-line error).

The ONNX backend imports nothing from torch, detectron2 or jsis_d2; the PyTorch backend
(``jsis_d2.engine.predict``) is imported only when chosen.
"""

import argparse
import contextlib
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from .coco_panoptic import PanopticResultsWriter
from .errors import RuntimeUsageError, SidecarError
from .inputs import ImageItem, items_from_image_info, items_from_inputs
from .run_dir import file_sha256, items_digest, prepare_output_dir

__all__ = [
    "get_parser",
    "list_items",
    "common_signature",
    "finish",
    "skipped_error",
    "run_onnx",
    "make_writer",
    "main",
]

logger = logging.getLogger("jsis_runtime.predict")

USAGE = """\
Panoptic predictions in the COCO panoptic results format for images, folders or a COCO
image-info file, with the PyTorch model (default) or an exported ONNX model.

    python tools/predict.py --config-file CFG --input imgs/ --output OUT \\
        --opts MODEL.WEIGHTS model_final.pth [KEY VALUE ...]
    python tools/predict.py --backend onnx --model EXPORT_DIR \\
        --image-info image_info_test-dev2017.json --image-root test2017/ --output OUT

Writes OUT/predictions.json ({"annotations", "categories"}, DATASET category ids) and one
PNG per image under OUT/panoptic/ (segment id = R + 256 G + 256^2 B). Rerunning the same
command resumes; unreadable images are skipped and named (exit code 2). See docs/PREDICT.md.
"""


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="predict", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backend", choices=["pytorch", "onnx"], default="pytorch")
    p.add_argument("--config-file", metavar="FILE", help="config (PyTorch backend)")
    p.add_argument("--model", metavar="DIR", help="export folder with model.json (onnx backend)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH", help="image files, folders or globs")
    src.add_argument("--image-info", metavar="JSON", help="COCO image-info JSON (ids, files)")
    p.add_argument("--image-root", metavar="DIR", help="folder of --image-info's file names")
    p.add_argument("--output", required=True, metavar="OUT", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace another run's OUT")
    p.add_argument("--figures", action="store_true", help="also draw OUT/figures/<name>.png")
    p.add_argument("--num-threads", type=int, default=None, help="compute threads per process")
    p.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="image reader processes (PyTorch: DataLoader workers, default "
        "DATALOADER.NUM_WORKERS) or read-ahead depth (onnx, default 4)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    dist = p.add_argument_group("PyTorch backend: several processes (Detectron2's launch)")
    dist.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    dist.add_argument("--num-machines", type=int, default=1)
    dist.add_argument("--machine-rank", type=int, default=0)
    dist.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0")
    p.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides (put last)"
    )
    return p


def check_args(args) -> None:
    """RuntimeUsageError for arguments that do not fit the chosen backend."""
    if args.image_info and not args.image_root:
        raise RuntimeUsageError("--image-info needs --image-root (the folder of its file names)")
    if args.image_root and not args.image_info:
        raise RuntimeUsageError("--image-root goes with --image-info")
    if args.backend == "onnx":
        if not args.model:
            raise RuntimeUsageError("--backend onnx needs --model DIR (an export folder)")
        bad = [f for f, v in (("--config-file", args.config_file), ("--opts", args.opts)) if v]
        if args.num_gpus != 1 or args.num_machines != 1:
            bad.append("--num-gpus/--num-machines")
        if bad:
            raise RuntimeUsageError(f"--backend onnx takes no {', '.join(bad)} (use --model)")
    else:
        if not args.config_file:
            raise RuntimeUsageError("the PyTorch backend needs --config-file (or --backend onnx)")
        if args.model:
            raise RuntimeUsageError("--model is for --backend onnx; PyTorch takes MODEL.WEIGHTS")


def list_items(args) -> List[ImageItem]:
    """The images of ``--input`` or ``--image-info/--image-root``."""
    if args.image_info:
        return items_from_image_info(args.image_info, args.image_root)
    return items_from_inputs(args.input)


def common_signature(args, items: Sequence[ImageItem]) -> Dict:
    """The part of a run's signature (:mod:`jsis_runtime.run_dir`) both backends share."""
    return {
        "backend": args.backend,
        "images": len(items),
        "images_sha256": items_digest(items),
        "figures": bool(args.figures),
    }


def skipped_error(skipped: Sequence[Tuple[str, str]]) -> Optional[str]:
    """The one-line error for skipped images, or None."""
    if not skipped:
        return None
    paths = [p for p, _ in skipped]
    return (
        f"{len(paths)} input image(s) could not be read and were skipped: "
        + ", ".join(paths[:5])
        + (", ..." if len(paths) > 5 else "")
        + " (the other predictions are written)"
    )


def finish(writer: PanopticResultsWriter, items, records: Dict, skipped) -> Optional[str]:
    """Write ``predictions.json`` with every finished image, in ``items``' order; returns the
    one-line error for skipped images (the job then exits with code 2), or None."""
    skipped_paths = {p for p, _ in skipped}
    done = [
        it.name
        for it in items
        if it.path not in skipped_paths and (it.name in records or writer.is_done(it.name))
    ]
    writer.write_json(done, records)
    return skipped_error(skipped)


def run_onnx(args) -> int:
    """The ONNX backend: one process, onnxruntime's threads, a reader and a writer thread."""
    from .job import predict_images, prefetch_images
    from .onnx_model import OnnxPanopticModel
    from .sidecar import category_table, load_sidecar

    sidecar = load_sidecar(args.model)
    items = list_items(args)
    signature = common_signature(args, items)
    signature["model"] = os.path.abspath(sidecar.model_path)
    if not os.path.isfile(sidecar.model_path):
        raise SidecarError(f"{sidecar.path}: model_file {sidecar.model_path} does not exist")
    signature["model_sha256"] = file_sha256(sidecar.model_path)
    signature["sidecar_sha256"] = file_sha256(sidecar.path)
    model = OnnxPanopticModel(args.model, num_threads=args.num_threads)  # before OUT is touched
    prepare_output_dir(args.output, signature, overwrite=args.overwrite)
    writer = make_writer(args, category_table(sidecar))
    todo = [it for it in items if not writer.is_done(it.name)]
    logger.info(
        "%d image(s): %d finished already, %d to predict with %s",
        len(items),
        len(items) - len(todo),
        len(todo),
        sidecar.model_path,
    )
    loaded = prefetch_images(todo, depth=args.num_workers or 4)
    result = predict_images(
        loaded, model.predict, writer, total=len(todo), progress=not args.no_progress
    )
    message = finish(writer, items, result.records, result.skipped)
    if message:
        raise RuntimeUsageError(message)
    return 0


def make_writer(args, categories) -> PanopticResultsWriter:
    """The results writer; with ``--figures`` it also draws each prediction."""
    draw = None
    if args.figures:
        from .figures import overlay_drawer

        draw = overlay_drawer(categories)
    return PanopticResultsWriter(args.output, categories, draw=draw)


@contextlib.contextmanager
def _log_to_stderr():
    """jsis_runtime's INFO lines on stderr while the block runs (the handler is removed after
    it, so an in-process caller keeps its logging as it was)."""
    lg = logging.getLogger("jsis_runtime")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(message)s"))
    lg.addHandler(handler)
    level = lg.level
    lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        lg.removeHandler(handler)
        lg.setLevel(level)


def main(argv=None) -> int:
    """Parse; run the chosen backend; known failures -> one ``predict: error:`` line, exit 2."""
    args = get_parser().parse_args(argv)
    try:
        check_args(args)
        if args.backend == "onnx":
            with _log_to_stderr():  # (the PyTorch backend uses Detectron2's setup_logger)
                return run_onnx(args)
    except (RuntimeUsageError, SidecarError) as e:
        sys.stderr.write(f"predict: error: {e}\n")
        return 2
    try:  # the PyTorch side, only when asked for
        from jsis_d2.engine.predict import run_pytorch
    except ImportError as e:
        sys.stderr.write(
            f"predict: error: the PyTorch backend needs torch, detectron2 and jsis_d2 ({e}); "
            "with only requirements/deploy.txt installed, use --backend onnx --model DIR\n"
        )
        return 2
    return run_pytorch(args)
