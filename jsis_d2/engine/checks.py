"""Up-front checks of a training/evaluation job, each failing with a message that names the
offending file, key or value (the tools turn :class:`UsageError` into one clean error line)."""
import logging
import os
import tempfile

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

__all__ = [
    "UsageError",
    "check_datasets",
    "check_output_dir",
    "check_checkpoint_matches_model",
    "fallback_syncbn",
]

logger = logging.getLogger(__name__)


class UsageError(RuntimeError):
    """A job that cannot run as configured (bad dataset name, folder, checkpoint, ...)."""


def check_datasets(cfg):
    """Every dataset named in DATASETS.TRAIN/TEST is registered, and its label space matches
    MODEL.SEM_SEG_HEAD.NUM_CLASSES (K) and MODEL.ROI_HEADS.NUM_CLASSES (T)."""
    registered = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                known = sorted(n for n in registered if n.startswith("jsis_"))
                raise UsageError(
                    f"DATASETS.{key}: unknown dataset {name!r}. Registered by jsis_d2: {known} "
                    "(custom data: jsis_d2.data.datasets.register_panoptic_dataset)"
                )
            md = MetadataCatalog.get(name)
            is_thing = getattr(md, "is_thing", None)
            if is_thing is None:
                continue  # not a jsis_d2 dataset: nothing to compare against
            k, t = len(is_thing), int(sum(is_thing))
            if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != k:
                raise UsageError(
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} but "
                    f"dataset {name!r} has K={k} classes ({t} things + {k - t} stuff)"
                )
            if cfg.MODEL.ROI_HEADS.NUM_CLASSES != t:
                raise UsageError(
                    f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES} but dataset "
                    f"{name!r} has T={t} thing classes"
                )


def check_output_dir(output_dir, resume=False, eval_only=False):
    """OUTPUT_DIR is writable, and does not hold an earlier run unless ``--resume`` says so."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write_test_"):
            pass
    except OSError as e:
        raise UsageError(f"OUTPUT_DIR {output_dir!r} is not writable: {e.strerror or e}") from e
    last = os.path.join(output_dir, "last_checkpoint")
    if not resume and not eval_only and os.path.isfile(last):
        with open(last) as f:
            ckpt = f.read().strip()
        raise UsageError(
            f"OUTPUT_DIR {output_dir!r} already holds a training run (last checkpoint: {ckpt}). "
            "Pass --resume to continue it, or choose another OUTPUT_DIR; nothing was overwritten."
        )


def _model_state_of(checkpoint):
    if isinstance(checkpoint, dict) and "model" in checkpoint:
        return checkpoint["model"]
    return checkpoint


def check_checkpoint_matches_model(model, path):
    """Fail when a checkpoint's tensors have other shapes than the model's (e.g. trained for
    another number of classes). Only for our own ``.pth`` checkpoints; ``.pkl`` backbones and
    remote URLs are left to Detectron2's checkpointer."""
    if not path or not path.endswith(".pth") or "://" in path:
        return
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint not found: {path}")
    try:
        state = _model_state_of(torch.load(path, map_location="cpu", weights_only=False))
    except Exception as e:  # corrupt / not a torch file
        raise UsageError(f"cannot read checkpoint {path}: {e}") from e
    own = model.state_dict()
    bad = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad:
        raise UsageError(
            f"checkpoint {path} does not fit this model (was it trained for another number of "
            f"classes? check MODEL.SEM_SEG_HEAD.NUM_CLASSES / MODEL.ROI_HEADS.NUM_CLASSES): "
            + "; ".join(bad[:6])
            + (f"; ... {len(bad) - 6} more" if len(bad) > 6 else "")
        )


def fallback_syncbn(cfg):
    """SyncBN needs several CUDA processes: on CPU or in a single process, use BN (warns).
    Changes ``cfg`` in place (it must not be frozen)."""
    single = comm.get_world_size() == 1 or cfg.MODEL.DEVICE == "cpu"
    for node, key in ((cfg.MODEL.RESNETS, "NORM"), (cfg.MODEL.SEM_SEG_HEAD, "NORM")):
        if node[key] == "SyncBN" and single:
            logger.warning(
                "%s=SyncBN needs distributed CUDA training (world size %d, device %s): using BN",
                "MODEL.RESNETS.NORM" if node is cfg.MODEL.RESNETS else "MODEL.SEM_SEG_HEAD.NORM",
                comm.get_world_size(),
                cfg.MODEL.DEVICE,
            )
            node[key] = "BN"
    return cfg
