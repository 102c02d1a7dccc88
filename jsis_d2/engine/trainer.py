"""Trainer: Detectron2's DefaultTrainer with JSIS-Net's mapper and evaluator (build_* only)."""
import logging
import os

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """DefaultTrainer + :class:`JSISDatasetMapper` + :class:`JSISEvaluator`.

    Everything else (SGD with momentum/weight decay, WarmupMultiStepLR, checkpoints every
    SOLVER.CHECKPOINT_PERIOD, periodic evaluation every TEST.EVAL_PERIOD, metrics.json,
    TensorBoard events, progress lines with ETA) is Detectron2's own.
    """

    @classmethod
    def build_train_loader(cls, cfg):
        from ..data.dataset_mapper import JSISDatasetMapper

        return build_detection_train_loader(cfg, mapper=JSISDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        from ..data.dataset_mapper import JSISDatasetMapper

        return build_detection_test_loader(
            cfg, dataset_name, mapper=JSISDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        from ..evaluation import JSISEvaluator

        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return JSISEvaluator.from_config(cfg, dataset_name, output_dir=output_folder)

    def resume_or_load(self, resume=True):
        """Detectron2's resume_or_load, plus one log line saying exactly what was restored."""
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            logger.info(
                "Resumed from checkpoint %s: training continues at iteration %d of %d",
                self.checkpointer.get_checkpoint_file(), self.start_iter, self.max_iter,
            )
        else:
            logger.info(
                "Starting a new run at iteration 0 of %d from MODEL.WEIGHTS=%r",
                self.max_iter, self.cfg.MODEL.WEIGHTS or "(random init)",
            )
