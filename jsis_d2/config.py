"""Config keys of jsis_d2 (all of them, in one place) and the config setup used by the tools.

Every key JSIS-Net adds to Detectron2's defaults is declared in :func:`add_jsis_config` with
its meaning and units, so a YAML file that misspells a key fails loudly at merge time.
"""

import os

import yaml

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_jsis_config", "get_jsis_cfg", "setup_cfg", "validate_config", "ConfigError"]


#: Values of SOLVER.OPTIMIZER (jsis_d2.engine.trainer.build_optimizer).
OPTIMIZERS = ("SGD", "ADAMW")


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the file or key."""


def add_jsis_config(cfg):
    """Add the JSIS-Net keys to a Detectron2 config (in place). Idempotent."""
    if "JSIS" in cfg.MODEL:
        return cfg

    # ---------------------------------------------------------------- model
    cfg.MODEL.JSIS = CN()
    # Which branches are built and trained (paper Table 3 ablation): any non-empty subset of
    # ["semantic", "instance"]. Both = JSIS-Net joint training.
    cfg.MODEL.JSIS.BRANCHES = ["semantic", "instance"]
    # Loss balancing, paper Table 2 (lambda_1..lambda_6). lambda_7 (L2 regularization, 5.5e-5)
    # is SOLVER.WEIGHT_DECAY. The trainer logs the weighted losses.
    cfg.MODEL.JSIS.LOSS_WEIGHTS = CN()
    cfg.MODEL.JSIS.LOSS_WEIGHTS.RPN_OBJ = 1.0  # lambda_1: RPN objectness
    cfg.MODEL.JSIS.LOSS_WEIGHTS.RPN_REG = 1.0  # lambda_2: RPN box regression
    cfg.MODEL.JSIS.LOSS_WEIGHTS.DET_CLS = 1.0  # lambda_3: detector classification
    cfg.MODEL.JSIS.LOSS_WEIGHTS.DET_REG = 0.15  # lambda_4: detector box regression
    cfg.MODEL.JSIS.LOSS_WEIGHTS.MASK = 0.3  # lambda_5: mask sigmoid cross-entropy
    cfg.MODEL.JSIS.LOSS_WEIGHTS.SEG = 1.0  # lambda_6: semantic softmax cross-entropy
    # Panoptic merge at inference: "jsis" (paper 2.2) or "kirillov" (PanopticFPN heuristic).
    cfg.MODEL.JSIS.MERGE = "jsis"
    # Stuff classes covering fewer pixels than this (at the ORIGINAL image resolution) are
    # replaced by the best stuff class above it (paper 2.2: 4096).
    cfg.MODEL.JSIS.STUFF_AREA_THRESH = 4096
    # Instances with a score below this are dropped before the merge.
    cfg.MODEL.JSIS.INSTANCE_SCORE_THRESH = 0.5
    # Mask probability at or above which an instance covers a pixel.
    cfg.MODEL.JSIS.MASK_THRESHOLD = 0.5
    # "kirillov" merge only: an instance whose visible part is below this fraction of its
    # mask is dropped.
    cfg.MODEL.JSIS.KIRILLOV_OVERLAP_THRESH = 0.5
    # Run the panoptic merge at inference (needs both branches).
    cfg.MODEL.JSIS.PANOPTIC_ON = True
    # Weights and input images in channels_last memory format (oneDNN / cuDNN convolutions may
    # be faster in it, depending on the model and device: docs/BENCHMARKS.md). Numerically the
    # same model.
    cfg.MODEL.JSIS.CHANNELS_LAST = False
    # On the CPU, ROIAlign as two matrix products (jsis_d2.modeling.roi_align) for bf16/fp16
    # features (no float32 round trip) and in training (its backward is GEMMs, not
    # torchvision's scatter). float32 inference and CUDA use Detectron2's op, with float32 ROI
    # coordinates for bf16/fp16 features (Detectron2 rounds them to the features' dtype).
    cfg.MODEL.JSIS.SEPARABLE_ROI_ALIGN = True

    # Semantic branch: PPMHead (uses Detectron2's SEM_SEG_HEAD node for the common keys:
    # NAME, IN_FEATURES, NUM_CLASSES = K (things + stuff), IGNORE_VALUE, NORM, CONVS_DIM).
    # Pyramid pooling bin sizes (output grid of each adaptive average pool).
    cfg.MODEL.SEM_SEG_HEAD.PPM_BINS = [1, 2, 3, 6]
    # Channels of each pyramid level after its 1x1 reduction conv.
    cfg.MODEL.SEM_SEG_HEAD.PPM_DIM = 512
    # Hybrid upsampling: a transposed convolution with this stride (kernel 2*stride), then a
    # bilinear resize to the input size.
    cfg.MODEL.SEM_SEG_HEAD.DECONV_STRIDE = 2
    # Dropout before the classifier (PSPNet uses 0.1).
    cfg.MODEL.SEM_SEG_HEAD.DROPOUT = 0.1

    # ---------------------------------------------------------------- data
    cfg.INPUT.JSIS = CN()
    # Fixed network input size [H, W] (paper: COCO 400x400, Mapillary 512x1024). Images are
    # resized to exactly this size (aspect ratio not kept); outputs go back to the original
    # size. Empty list: use Detectron2's MIN_SIZE_*/MAX_SIZE_* resizing instead.
    cfg.INPUT.JSIS.FIXED_SIZE = [400, 400]
    # Semantic target of crowd regions: "class" (their category, as any pixel) or "ignore".
    cfg.INPUT.JSIS.CROWD_SEM_SEG = "class"
    # Skip training samples whose files are missing/corrupt/inconsistent (logged by name and
    # counted) and images with unknown category ids (dropped at load, counted) instead of
    # failing; every sample bad is still an error. Default: fail naming the file. Evaluation
    # never skips.
    cfg.DATALOADER.SKIP_BAD_SAMPLES = False

    # ---------------------------------------------------------------- solver
    # Epoch-based schedule: when EPOCHS > 0, MAX_ITER and STEPS are computed from the number
    # of training images and IMS_PER_BATCH (STEPS from STEPS_EPOCHS). 0: use MAX_ITER/STEPS.
    cfg.SOLVER.EPOCHS = 0
    cfg.SOLVER.STEPS_EPOCHS = []
    # "SGD" (Detectron2's: momentum SOLVER.MOMENTUM, the paper's choice) or "ADAMW"
    # (torch.optim.AdamW, betas SOLVER.ADAMW_BETAS). Both use BASE_LR, WEIGHT_DECAY(_NORM),
    # the LR schedule and gradient clipping of SOLVER as usual.
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.ADAMW_BETAS = (0.9, 0.999)
    # AdamW's fused implementation (torch.optim.AdamW(fused=True), CPU and CUDA): the same
    # update in one kernel per step instead of ~10 small ops per parameter tensor (its speed:
    # docs/BENCHMARKS.md, "profile").
    cfg.SOLVER.ADAMW_FUSED = True
    # Mixed-precision training (jsis_d2.precision): Detectron2's SOLVER.AMP.ENABLED turns it
    # on; this is the autocast dtype, "float16" (Detectron2's AMPTrainer with its grad scaler,
    # CUDA only) or "bfloat16" (no grad scaler; CUDA, or a CPU with bf16 support). Losses stay
    # float32. A device without the dtype is a ConfigError when the model is built.
    cfg.SOLVER.AMP.PRECISION = "float16"

    # ---------------------------------------------------------------- evaluation
    cfg.TEST.JSIS = CN()
    # RPN mean recall (paper Table 4): a GT box is recalled when some proposal has IoU >= this.
    cfg.TEST.JSIS.RPN_RECALL_IOU = 0.5
    # Write panoptic predictions (PNG + JSON) under OUTPUT_DIR/inference when evaluating.
    cfg.TEST.JSIS.SAVE_PANOPTIC = True
    # The evaluator's accumulators, by name in jsis_d2.evaluation.ACCUMULATOR_REGISTRY (one per
    # model output key: PQ, mIoU, COCO AP, RPN recall). A section is reported only when the
    # model produced its output key.
    cfg.TEST.JSIS.ACCUMULATORS = ["panoptic_seg", "sem_seg", "instances", "proposals"]
    # Inference compute dtype (autocast): "float32", "bfloat16" (CUDA, or a CPU with bf16
    # support) or "float16" (CUDA). Outputs (logits, scores, mask probabilities), the panoptic
    # merge and the evaluator stay float32.
    cfg.TEST.PRECISION = "float32"
    return cfg


def get_jsis_cfg():
    """Detectron2's default config with the JSIS-Net keys added."""
    return add_jsis_config(get_cfg())


def _merge_config_file(cfg, config_file):
    """``cfg.merge_from_file`` with every known failure as one ConfigError line: a missing or
    unreadable file in the ``_BASE_`` chain, YAML syntax (file, line, column), a file that is
    not a mapping of keys, an unknown key or a bad value."""
    try:
        cfg.merge_from_file(config_file)
    except OSError as e:
        missing = e.filename or config_file
        via = f" (a _BASE_ in the chain of {config_file})"
        if os.path.abspath(missing) == os.path.abspath(config_file):
            via = ""
        raise ConfigError(f"cannot read config file {missing}{via}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = (
            f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else config_file
        )
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"YAML syntax error in {where}: {what}") from e
    except (AttributeError, TypeError) as e:  # fvcore expects a mapping: an empty file, a list
        raise ConfigError(
            f"config file {config_file} (or a _BASE_ it names) is empty or not a YAML mapping "
            "of config keys"
        ) from e
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"cannot use config file {config_file}: {e}") from e


def setup_cfg(config_file=None, opts=None, freeze=True):
    """Build a config from a YAML file (with ``_BASE_`` inheritance) and ``KEY VALUE`` opts.

    Raises :class:`ConfigError` naming the file when it (or a ``_BASE_`` it names) does not
    exist or does not parse, and naming the key when an override is unknown.
    """
    cfg = get_jsis_cfg()
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file not found: {config_file}")
        _merge_config_file(cfg, config_file)
    if opts:
        if len(opts) % 2:
            raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd list: {opts}")
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"cannot apply overrides {opts}: {e}") from e
    if str(cfg.SOLVER.OPTIMIZER).upper() not in OPTIMIZERS:
        raise ConfigError(
            f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r} (from {config_file or 'the defaults'}"
            f"{' and the overrides' if opts else ''}) is not one of {', '.join(OPTIMIZERS)}"
        )
    validate_config(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def _merge_names():
    """The names MODEL.JSIS.MERGE accepts: the registered panoptic merges."""
    from .modeling.merges import PANOPTIC_MERGE_REGISTRY

    return tuple(sorted(name for name, _ in PANOPTIC_MERGE_REGISTRY))


def validate_config(cfg):
    """ConfigError (one line naming the key and value) for values no job can run with: the
    solver's sizes and periods, the LR and its steps, the device name, the semantic ignore
    value among the class indices, and the project's own choices (crowd pixels, branches,
    merge). Whether a CUDA device is present is the job's check
    (:func:`jsis_d2.engine.checks.check_device`), not the config's."""
    import torch

    from .data.targets import CROWD_SEM_SEG_MODES
    from .modeling.meta_arch import BRANCHES

    def bad(key, value, want):
        raise ConfigError(f"{key}={value!r}: {want}")

    s = cfg.SOLVER
    if s.IMS_PER_BATCH < 1:
        bad("SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH, "must be >= 1 (images per iteration)")
    if s.EPOCHS <= 0 and s.MAX_ITER < 1:
        bad("SOLVER.MAX_ITER", s.MAX_ITER, "must be >= 1 (or set SOLVER.EPOCHS)")
    if s.CHECKPOINT_PERIOD < 1:
        bad("SOLVER.CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD, "must be >= 1 (iterations)")
    if s.BASE_LR < 0:
        bad("SOLVER.BASE_LR", s.BASE_LR, "must be >= 0")
    steps = list(s.STEPS)
    if steps != sorted(steps) or any(x < 1 for x in steps):
        bad("SOLVER.STEPS", tuple(steps), "must be increasing iterations >= 1")
    if cfg.DATALOADER.NUM_WORKERS < 0:
        bad("DATALOADER.NUM_WORKERS", cfg.DATALOADER.NUM_WORKERS, "must be >= 0 (0: no worker)")
    try:
        torch.device(cfg.MODEL.DEVICE)
    except (RuntimeError, TypeError, ValueError):
        bad("MODEL.DEVICE", cfg.MODEL.DEVICE, 'not a device name ("cpu", "cuda", "cuda:1", ...)')
    if cfg.INPUT.JSIS.CROWD_SEM_SEG not in CROWD_SEM_SEG_MODES:
        bad(
            "INPUT.JSIS.CROWD_SEM_SEG",
            cfg.INPUT.JSIS.CROWD_SEM_SEG,
            f"one of {CROWD_SEM_SEG_MODES}",
        )
    branches = list(cfg.MODEL.JSIS.BRANCHES)
    unknown = [b for b in branches if b not in BRANCHES]
    if not branches or len(set(branches)) != len(branches) or unknown:
        raise ConfigError(  # the model's own wording (meta_arch), one line
            f"MODEL.JSIS.BRANCHES must be a non-empty list of distinct names from "
            f"{list(BRANCHES)}, got {branches}" + (f" (unknown: {unknown})" if unknown else "")
        )
    merges = _merge_names()
    if cfg.MODEL.JSIS.MERGE not in merges:
        raise ConfigError(f"MODEL.JSIS.MERGE must be one of {merges}, got {cfg.MODEL.JSIS.MERGE!r}")
    k, ignore = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    if "semantic" in branches and 0 <= ignore < k:
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={k}: class {ignore} would be the semantic ignore "
            f"value MODEL.SEM_SEG_HEAD.IGNORE_VALUE={ignore} (void pixels) and never be trained. "
            f"Set MODEL.SEM_SEG_HEAD.IGNORE_VALUE to {k} or more (e.g. {max(k, 65535)})"
        )
