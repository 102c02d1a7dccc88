"""Up-front checks of a training/evaluation job, each failing with a message that names the
offending file, key or value (the tools turn :class:`UsageError` into one clean error line)."""

import logging
import os
import pickle
import tempfile
import zipfile

import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from ..data.label_space import LabelSpace, label_space_difference

__all__ = [
    "UsageError",
    "check_datasets",
    "check_device",
    "check_output_dir",
    "check_checkpoint_matches_model",
    "check_checkpoint_label_space",
    "LabelSpaceRecord",
    "label_space_of",
    "check_weights_readable",
    "checkpoint_problem",
    "fallback_syncbn",
]

logger = logging.getLogger(__name__)


class UsageError(RuntimeError):
    """A job that cannot run as configured (bad dataset name, folder, checkpoint, ...)."""


def check_datasets(cfg):
    """Every dataset named in DATASETS.TRAIN/TEST is registered, its label space matches
    MODEL.SEM_SEG_HEAD.NUM_CLASSES (K) and MODEL.ROI_HEADS.NUM_CLASSES (T), and all of them
    have the same label space (ids, names, thing/stuff: the model's class k means one thing)."""
    registered = set(DatasetCatalog.list())
    first = None  # (name, LabelSpace) of the first jsis_d2 dataset
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
            if t == 0 and "instance" in cfg.MODEL.JSIS.BRANCHES:
                raise UsageError(
                    f"dataset {name!r} has no thing class ({k} stuff classes): the instance "
                    "branch would have nothing to detect. Train the semantic branch alone: "
                    "MODEL.JSIS.BRANCHES \"['semantic']\""
                )
            if "instance" in cfg.MODEL.JSIS.BRANCHES and cfg.MODEL.ROI_HEADS.NUM_CLASSES != t:
                raise UsageError(
                    f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES} but dataset "
                    f"{name!r} has T={t} thing classes"
                )
            labels = LabelSpace.from_metadata(md)
            if first is None:
                first = (name, labels)
                continue
            diff = label_space_difference(first[1], labels)
            if diff:
                raise UsageError(
                    f"DATASETS.{key}: dataset {name!r} has another label space than "
                    f"{first[0]!r} ({diff}); class indices would mean different categories"
                )


def check_device(cfg):
    """MODEL.DEVICE names a device this machine has (a CUDA one needs a visible GPU)."""
    device = torch.device(cfg.MODEL.DEVICE)
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise UsageError(
                f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but no CUDA GPU is visible (torch "
                f"{torch.__version__}, CUDA_VISIBLE_DEVICES={visible!r}): use MODEL.DEVICE cpu"
            )
        if device.index is not None and device.index >= n:
            raise UsageError(
                f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but only {n} CUDA GPU(s) are visible"
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
        checkpoint = checkpoint["model"]
    if (
        isinstance(checkpoint, dict)
        and checkpoint
        and all(str(k).startswith("module.") for k in checkpoint)
    ):  # saved from a DistributedDataParallel model; fvcore strips the prefix when loading
        checkpoint = {k[len("module.") :]: v for k, v in checkpoint.items()}
    return checkpoint


def checkpoint_problem(path):
    """Why ``path`` is not a complete checkpoint file ("missing", "empty (0 bytes)",
    "truncated ..."), or None when it looks complete.

    torch.save writes a zip archive whose directory is at the end, so a file cut short has
    none: for those only the end of the file is read. ``.pkl`` files (Detectron2 model zoo)
    are unpickled, files in torch's legacy format loaded, to be sure.
    """
    if not os.path.isfile(path):
        return "missing"
    if os.path.getsize(path) == 0:
        return "empty (0 bytes)"
    if zipfile.is_zipfile(path):
        return None
    try:
        if path.endswith(".pkl"):
            with open(path, "rb") as f:
                pickle.load(f, encoding="latin1")
        else:
            torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated pickle, not a checkpoint at all, ...
        text = str(e).strip()
        first = text.splitlines()[0].split(". ")[0] if text else ""  # torch's are paragraphs
        return f"truncated or not a checkpoint ({type(e).__name__}: {first})"
    return None


def _require_complete(path, what):
    problem = checkpoint_problem(path)
    if problem == "missing":
        raise UsageError(f"{what} not found: {path}")
    if problem:
        raise UsageError(f"{what} {path} is {problem}")


def check_weights_readable(path, key="MODEL.WEIGHTS"):
    """The initial weights of a NEW run: a local file must exist and be complete. Shapes
    are not compared: fine-tuning from another label space is normal (Detectron2 skips the
    mismatched heads with a warning). URLs are left to Detectron2."""
    if path and "://" not in path:
        _require_complete(path, f"{key} file")


def check_checkpoint_matches_model(model, path, require_all=False):
    """Fail when a checkpoint's tensors have other shapes than the model's (e.g. trained for
    another number of classes) or, with ``require_all`` (inference, evaluation), when it
    lacks some of the model's parameters (they would stay randomly initialized). For every
    local torch file (``.pth``, ``.pt``, any name); ``.pkl`` backbones (Detectron2's model
    zoo format, checked for completeness only) and remote URLs are left to Detectron2's
    checkpointer."""
    if not path or "://" in path:
        return
    if path.endswith(".pkl"):
        _require_complete(path, "checkpoint")
        return
    _require_complete(path, "checkpoint")
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
    missing = sorted(k for k in own if k not in state)
    if require_all and missing:
        raise UsageError(
            f"checkpoint {path} lacks {len(missing)} of the model's tensors, which would stay "
            f"randomly initialized (another MODEL.META_ARCHITECTURE or MODEL.JSIS.BRANCHES?): "
            + ", ".join(missing[:6])
            + (", ..." if len(missing) > 6 else "")
        )


def fallback_syncbn(cfg):
    """SyncBN needs several CUDA processes: on CPU or in a single process, use BN (warns).
    Changes ``cfg`` in place (it must not be frozen)."""
    single = comm.get_world_size() == 1 or cfg.MODEL.DEVICE == "cpu"
    for node in ("RESNETS", "SEM_SEG_HEAD"):
        if cfg.MODEL[node].NORM == "SyncBN" and single:
            logger.warning(
                "MODEL.%s.NORM=SyncBN needs distributed CUDA training (world size %d, device %s): "
                "using BN",
                node,
                comm.get_world_size(),
                cfg.MODEL.DEVICE,
            )
            cfg.MODEL[node].NORM = "BN"
    return cfg


class LabelSpaceRecord:
    """Checkpointable (fvcore ``checkpointables``) that saves the training label space in
    every checkpoint as ``label_space`` (the categories, contiguous order) and, on resume,
    refuses a checkpoint trained on another one."""

    def __init__(self, labels, dataset_name):
        self.labels, self.dataset_name = labels, dataset_name

    def state_dict(self):
        return {"categories": [dict(c) for c in self.labels.categories]}

    def load_state_dict(self, state):
        _compare_label_spaces(state, self.labels, "the checkpoint", self.dataset_name)


def _compare_label_spaces(state, labels, what, dataset_name):
    saved = LabelSpace(state["categories"])
    diff = label_space_difference(saved, labels)
    if diff:
        raise UsageError(
            f"{what} was trained on another label space than dataset {dataset_name!r} ({diff}; "
            "first = the checkpoint's): its class indices would be drawn or scored as other "
            "categories. Use the DATASETS.TEST / DATASETS.TRAIN it was trained with"
        )


def label_space_of(cfg) -> LabelSpace:
    """The label space of the config's dataset (``DATASETS.TEST[0]``, else ``TRAIN[0]``):
    contiguous index <-> dataset id, names, colours. What the prediction tools and the export
    map contiguous classes with."""
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    if not names:
        raise UsageError(
            "DATASETS.TEST and DATASETS.TRAIN are empty: the category ids of the predictions "
            "come from that dataset's metadata; name the dataset the model was trained on"
        )
    try:
        return LabelSpace.from_metadata(MetadataCatalog.get(names[0]))
    except KeyError as e:
        raise UsageError(f"DATASETS: {e.args[0]}") from None


def check_checkpoint_label_space(path, labels, dataset_name):
    """UsageError when the checkpoint at ``path`` records a training label space
    (:class:`LabelSpaceRecord`) other than ``labels`` (dataset ``dataset_name``'s). Files
    without the record (older, or not jsis_d2's) are not checked."""
    if not path or "://" in path or path.endswith(".pkl") or not os.path.isfile(path):
        return
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # not a zip checkpoint (mmap needs one), unreadable: others report it
        return
    if isinstance(ckpt, dict) and isinstance(ckpt.get("label_space"), dict):
        _compare_label_spaces(ckpt["label_space"], labels, f"checkpoint {path}", dataset_name)
