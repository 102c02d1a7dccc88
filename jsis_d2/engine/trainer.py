"""Trainer: Detectron2's DefaultTrainer with JSIS-Net's mapper and evaluator (build_* only)."""

import inspect
import logging
import os

import torch

from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.solver import build_optimizer as d2_build_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm

from ..config import OPTIMIZERS, ConfigError
from ..data.build import train_dataset_dicts
from ..data.dataset_mapper import JSISDatasetMapper
from ..data.label_space import LabelSpace
from ..evaluation import JSISEvaluator
from ..precision import training_dtype
from .checkpoint import EnsureFinalCheckpoint, JSISCheckpointer
from .checks import LabelSpaceRecord, UsageError
from .distributed import cpu_aware_ddp
from .report import drop_metrics_after, set_aside_torn_metrics_line

__all__ = ["Trainer", "build_optimizer", "build_step_trainer"]

logger = logging.getLogger(__name__)

#: Whether the installed DefaultTrainer checkpoints its step trainer (optimizer, AMP grad
#: scaler) under "_trainer" itself: official detectron2 does, 0.6 does not (its checkpoint's
#: "trainer" holds only "iteration" and the hooks' states: the LR scheduler's).
D2_SAVES_STEP_TRAINER = "state_dict" in vars(DefaultTrainer)
#: What a step trainer's state_dict holds besides its iteration, and what each part is.
STEP_TRAINER_STATE = {"optimizer": "optimizer state", "grad_scaler": "AMP grad scaler"}


def build_optimizer(cfg, model):
    """The optimizer named by ``SOLVER.OPTIMIZER``.

    "SGD" is Detectron2's own ``build_optimizer``. "ADAMW" is ``torch.optim.AdamW`` over the
    same parameter groups (Detectron2's ``get_default_optimizer_params``: no weight decay on
    norm layers unless WEIGHT_DECAY_NORM, bias LR factor) with the same gradient clipping,
    fused (one kernel per step for all parameters) when SOLVER.ADAMW_FUSED.
    """
    name = str(cfg.SOLVER.OPTIMIZER).upper()
    if name == "SGD":
        return d2_build_optimizer(cfg, model)
    if name != "ADAMW":
        raise ConfigError(
            f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r} is not one of {', '.join(OPTIMIZERS)}"
        )
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
        params,
        lr=cfg.SOLVER.BASE_LR,
        betas=tuple(cfg.SOLVER.ADAMW_BETAS),
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        fused=bool(cfg.SOLVER.ADAMW_FUSED),
    )


def build_step_trainer(cfg, step_trainer):
    """The step trainer for SOLVER.AMP, on the model, data loader and optimizer of the one
    DefaultTrainer built. The model autocasts its own training forward (float32 losses), so:
    float32, or float16 on CUDA -> Detectron2's choice (SimpleTrainer / AMPTrainer with its
    grad scaler); bfloat16 on CUDA -> AMPTrainer without gradient scaling (``precision``
    passed where the installed AMPTrainer takes it); on CPU -> SimpleTrainer (Detectron2's
    AMPTrainer is CUDA-only).
    """
    dtype = training_dtype(cfg)
    if dtype == torch.float32:
        return step_trainer
    parts = (step_trainer.model, step_trainer.data_loader, step_trainer.optimizer)
    if torch.device(cfg.MODEL.DEVICE).type != "cuda":
        logger.info("Training with %s autocast on %s (SimpleTrainer)", dtype, cfg.MODEL.DEVICE)
        return SimpleTrainer(*parts)
    if dtype == torch.float16:
        return step_trainer
    kwargs = {"grad_scaler": torch.amp.GradScaler("cuda", enabled=False)}
    if "precision" in inspect.signature(AMPTrainer.__init__).parameters:
        kwargs["precision"] = dtype
    logger.info("Training with %s autocast on CUDA (AMPTrainer, no grad scaling)", dtype)
    return AMPTrainer(*parts, **kwargs)


class Trainer(DefaultTrainer):
    """DefaultTrainer + :class:`JSISDatasetMapper` + :class:`JSISEvaluator`, the optimizer of
    :func:`build_optimizer`, the step trainer of :func:`build_step_trainer`, atomic
    checkpoints (:class:`JSISCheckpointer`) and DDP of a CPU model
    (:func:`~jsis_d2.engine.distributed.cpu_aware_ddp`). Everything else (LR schedule,
    periodic checkpoints and evaluation, metrics.json, TensorBoard, ETA) is Detectron2's own.
    """

    def __init__(self, cfg):
        with cpu_aware_ddp():
            super().__init__(cfg)
        self._trainer = build_step_trainer(cfg, self._trainer)

    def build_hooks(self):
        """Detectron2's hooks, with the checkpointer made crash-safe first: DefaultTrainer's
        __init__ creates ``self.checkpointer`` just before calling this, and the
        PeriodicCheckpointer hook built here must hold the replacement."""
        self.checkpointer = JSISCheckpointer.like(self.checkpointer)
        train = self.cfg.DATASETS.TRAIN
        md = MetadataCatalog.get(train[0]) if train else None
        if md is not None and getattr(md, "categories", None) is not None:
            self.checkpointer.add_checkpointable(
                "label_space", LabelSpaceRecord(LabelSpace.from_metadata(md), train[0])
            )
        if comm.is_main_process():  # before Detectron2's JSONWriter appends to it
            set_aside_torn_metrics_line(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))
        return super().build_hooks() + [EnsureFinalCheckpoint(self.checkpointer)]

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        """Detectron2's scheduler, once the steps are checked against MAX_ITER as they are
        after Detectron2's scaling to the number of processes (a step equal to MAX_ITER is
        fvcore's "Milestone must be smaller than total number of updates" traceback)."""
        bad = [s for s in cfg.SOLVER.STEPS if s == cfg.SOLVER.MAX_ITER]
        if bad:
            raise UsageError(
                f"SOLVER.STEPS={tuple(cfg.SOLVER.STEPS)} holds "
                f"SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER} (values after scaling to the number of "
                "processes): a step must come before the last iteration"
            )
        return super().build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """Detectron2's loader over :func:`train_dataset_dicts`. The mapper knows how many
        distinct samples there are, so "every sample bad" under SKIP_BAD_SAMPLES is one
        BadSampleError naming the dataset."""
        dicts = train_dataset_dicts(cfg)
        num_samples = len({JSISDatasetMapper.sample_key(d) for d in dicts})
        mapper = JSISDatasetMapper(cfg, is_train=True, num_samples=num_samples)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=JSISDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return JSISEvaluator.from_config(cfg, dataset_name, output_dir=output_folder)

    def state_dict(self):
        """DefaultTrainer's state (iteration, hooks: the LR scheduler), plus the step trainer's
        (optimizer, AMP grad scaler) under "_trainer" where the installed detectron2 does not
        save it itself (0.6; official does, and is left alone)."""
        ret = super().state_dict()
        if not D2_SAVES_STEP_TRAINER:
            ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        """The inverse of :meth:`state_dict` (what official DefaultTrainer.load_state_dict
        does, on both stacks). A checkpoint without "_trainer" (written by 0.6
        before jsis_d2 saved it) restores the iteration and LR scheduler only, with a
        warning: the optimizer starts from zero moments/momentum."""
        step_state = state_dict.get("_trainer")
        TrainerBase.load_state_dict(self, state_dict)  # iteration, hooks (both stacks)
        if step_state is not None:
            if isinstance(self._trainer, AMPTrainer) and "grad_scaler" not in step_state:
                logger.warning(  # saved without float16 AMP (SOLVER.AMP changed since)
                    "The checkpoint holds no AMP grad scaler state: the scaler starts fresh"
                )
                SimpleTrainer.load_state_dict(self._trainer, step_state)
            else:
                self._trainer.load_state_dict(step_state)
        self._restored = ["model", "iteration"]
        if "LRScheduler" in state_dict.get("hooks", {}):
            self._restored.append("LR scheduler")
        if step_state is None:
            logger.warning(
                "The checkpoint holds no optimizer state (saved by detectron2 0.6 before "
                "jsis_d2 kept it): the optimizer restarts with zero momentum/moments"
            )
        else:
            self._restored += [
                what for key, what in STEP_TRAINER_STATE.items() if step_state.get(key)
            ]

    def resume_or_load(self, resume=True):
        """Detectron2's resume_or_load, plus one log line saying exactly what was restored.

        A resume whose checkpoint is past SOLVER.MAX_ITER is refused (UsageError) rather than
        "continuing" backwards and labelling model_final.pth with the wrong iteration. The
        rows of metrics.json logged after the checkpoint's iteration (by the run that was
        killed) are set aside, so each iteration has one value.
        """
        self._restored = []
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            path = self.checkpointer.get_checkpoint_file()
            if self.start_iter > self.max_iter:
                raise UsageError(
                    f"--resume: checkpoint {path} is at iteration {self.start_iter - 1}, past "
                    f"SOLVER.MAX_ITER={self.max_iter}: nothing to train. Raise SOLVER.MAX_ITER "
                    f"to continue the run, or evaluate it with --eval-only MODEL.WEIGHTS {path}"
                )
            if comm.is_main_process():
                drop_metrics_after(
                    os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter - 1
                )
            logger.info(
                "Resumed from checkpoint %s (restored: %s): training continues at iteration "
                "%d of %d",
                path,
                ", ".join(self._restored),
                self.start_iter,
                self.max_iter,
            )
        else:
            logger.info(
                "Starting a new run at iteration 0 of %d from MODEL.WEIGHTS=%r",
                self.max_iter,
                self.cfg.MODEL.WEIGHTS or "(random init)",
            )
