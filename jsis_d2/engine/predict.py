"""The PyTorch backend of ``tools/predict.py``: :class:`~jsis_d2.predictor.JSISPredictor` over
a DataLoader, images sharded over Detectron2's ``launch`` processes, rank 0 writing
``predictions.json``. The arguments, image list, output folder and writer are the runtime's
(:mod:`jsis_runtime.cli`), shared with the ONNX backend.

Id spaces: the model's ``panoptic_seg`` segments carry CONTIGUOUS category indices; they are
turned into DATASET ids with the label space of ``DATASETS.TEST[0]`` (else ``TRAIN[0]``)
before anything is written.

Several processes (``--num-gpus N [--num-machines M ...]``): rank r predicts every
(world size)-th of the images not finished yet; every rank writes its PNGs and records into
the same OUT (on several machines OUT must be a shared folder); the records are gathered to
rank 0, which writes ``predictions.json``.
"""

import logging
import os
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from jsis_runtime.cli import common_signature, finish, list_items, make_writer
from jsis_runtime.errors import RuntimeUsageError, UnreadableImageError
from jsis_runtime.image_io import read_image_rgb
from jsis_runtime.job import predict_images
from jsis_runtime.run_dir import file_sha256, prepare_output_dir

from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import ConfigError, setup_cfg
from ..data.label_space import LabelSpace
from ..predictor import JSISPredictor
from .checks import UsageError, check_datasets, label_space_of
from .distributed import destroy_process_groups, worker_error
from .launcher import launch_reporting

__all__ = ["run_pytorch", "pytorch_predict_fn", "image_loader"]

logger = logging.getLogger(__name__)

#: Failures with a known cause: one ``predict: error:`` line and exit code 2.
KNOWN_ERRORS = (ConfigError, UsageError, RuntimeUsageError, FileNotFoundError)


def pytorch_predict_fn(predictor: JSISPredictor, labels: LabelSpace) -> Callable:
    """``predict(image_rgb uint8 [H, W, 3]) -> (panoptic_seg int32 [H, W], segments_info)``
    with DATASET category ids, from the model's ``panoptic_seg`` output."""

    def predict(image_rgb: np.ndarray) -> Tuple[np.ndarray, List[Dict]]:
        out = predictor(np.ascontiguousarray(image_rgb[:, :, ::-1]))  # BGR, as it takes it
        if "panoptic_seg" not in out:
            raise UsageError(
                f"the model gives no panoptic_seg (outputs: {sorted(out)}); check "
                "MODEL.JSIS.BRANCHES: panoptic predictions need both branches"
            )
        pan, segments_info = out["panoptic_seg"]
        segs = [dict(s, category_id=labels.to_dataset_id(s["category_id"])) for s in segments_info]
        return pan.cpu().numpy().astype(np.int32, copy=False), segs

    return predict


class _Images(torch.utils.data.Dataset):
    """``(item, uint8 RGB image or its UnreadableImageError)`` per item."""

    def __init__(self, items):
        self.items = list(items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        try:
            return item, read_image_rgb(item.path)
        except UnreadableImageError as e:
            return item, e


def _as_is(sample):
    return sample


def image_loader(items, num_workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader decoding ``items`` in order in ``num_workers`` processes, ahead of the
    model (no batching, no conversion to tensors)."""
    return torch.utils.data.DataLoader(
        _Images(items), batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_as_is
    )


def _signature(args, cfg, items) -> Dict:
    signature = common_signature(args, items)
    weights = cfg.MODEL.WEIGHTS
    signature["config_file"] = os.path.abspath(args.config_file)
    signature["opts"] = list(args.opts)
    signature["config"] = cfg.dump()
    signature["weights_sha256"] = file_sha256(weights) if os.path.isfile(weights) else None
    return signature


def _predict(args) -> str:
    """One process's share of the job; on rank 0, returns the error line (or "")."""
    rank, world = comm.get_rank(), comm.get_world_size()
    setup_logger(name="jsis_d2", distributed_rank=rank)
    setup_logger(name="jsis_runtime", distributed_rank=rank)
    cfg = setup_cfg(args.config_file, args.opts)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    labels = label_space_of(cfg)
    check_datasets(cfg)
    items = list_items(args)
    predictor = JSISPredictor(cfg)  # refuses random or unfitting weights, before OUT is touched
    if comm.is_main_process():
        prepare_output_dir(args.output, _signature(args, cfg, items), overwrite=args.overwrite)
    comm.synchronize()
    categories = [
        {"id": c["id"], "name": c["name"], "isthing": int(bool(c["isthing"])), "color": color}
        for c, color in zip(labels.categories, labels.colors)
    ]
    writer = make_writer(args, categories)
    todo = [it for it in items if not writer.is_done(it.name)]
    mine = todo[rank::world]
    logger.info(
        "%d image(s): %d finished already; this process (rank %d of %d) predicts %d",
        len(items),
        len(items) - len(todo),
        rank,
        world,
        len(mine),
    )
    workers = cfg.DATALOADER.NUM_WORKERS if args.num_workers is None else args.num_workers
    result = predict_images(
        image_loader(mine, workers),
        pytorch_predict_fn(predictor, labels),
        writer,
        total=len(mine),
        progress=not args.no_progress and comm.is_main_process(),
    )
    gathered = comm.gather((result.records, result.skipped), dst=0)
    if not comm.is_main_process():
        return ""
    records = {k: v for recs, _ in gathered for k, v in recs.items()}
    skipped = [s for _, sk in gathered for s in sk]
    return finish(writer, items, records, skipped) or ""


def _worker_main(args) -> None:
    """:func:`_predict` in one of ``launch``'s processes; a known failure or skipped images
    leave one error line for the launching process (exit code 2)."""
    try:
        message = _predict(args)
    except KNOWN_ERRORS as e:
        if comm.get_world_size() == 1:
            raise
        worker_error(f"predict: error: {e}", 2)
    destroy_process_groups()
    if message:
        if comm.get_world_size() == 1:
            raise RuntimeUsageError(message)
        worker_error(f"predict: error: {message}", 2)


def _describe(e: BaseException):
    """``(line, 2)`` for a known failure of the launching process, or None (a bug)."""
    return (f"predict: error: {e}", 2) if isinstance(e, KNOWN_ERRORS) else None


def run_pytorch(args) -> int:
    """Launch the PyTorch backend (one process per GPU, or per CPU rank with gloo); known
    failures, here or in a worker, end with one ``predict: error:`` line and exit code 2."""
    return launch_reporting(_worker_main, args, _describe, prefix="jsis_d2_predict_")
