"""jsis_d2.engine: epoch schedule conversion and the up-front job checks."""

import os

import pytest
import torch

from jsis_d2.config import get_jsis_cfg
from jsis_d2.data import LabelSpace
from jsis_d2.engine import UsageError, resolve_epoch_schedule
from jsis_d2.engine.checks import (
    check_checkpoint_matches_model,
    check_datasets,
    check_output_dir,
    fallback_syncbn,
)

from detectron2.data import DatasetCatalog, MetadataCatalog


def test_epochs_to_iterations_paper_coco_schedule():
    cfg = get_jsis_cfg()
    cfg.SOLVER.IMS_PER_BATCH = 5
    cfg.SOLVER.EPOCHS = 8
    cfg.SOLVER.STEPS_EPOCHS = [4, 7]
    per_epoch = resolve_epoch_schedule(cfg, num_images=118287)  # COCO train2017
    assert per_epoch == 23658  # ceil(118287 / 5)
    assert cfg.SOLVER.MAX_ITER == 8 * 23658
    assert tuple(cfg.SOLVER.STEPS) == (4 * 23658, 7 * 23658)


def test_iteration_based_config_untouched_and_bad_steps_named():
    cfg = get_jsis_cfg()
    cfg.SOLVER.MAX_ITER = 123
    assert resolve_epoch_schedule(cfg, num_images=10) == 0 and cfg.SOLVER.MAX_ITER == 123
    cfg.SOLVER.EPOCHS = 4
    cfg.SOLVER.STEPS_EPOCHS = [2, 5]
    with pytest.raises(UsageError, match="STEPS_EPOCHS"):
        resolve_epoch_schedule(cfg, num_images=10)


def _register_tiny(name, k_things, k_stuff):
    cats = [
        {"id": i + 1, "name": f"c{i}", "isthing": int(i < k_things)}
        for i in range(k_things + k_stuff)
    ]
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, list)
        MetadataCatalog.get(name).set(**LabelSpace(cats).metadata())


def test_unknown_dataset_and_class_count_mismatch_are_named():
    _register_tiny("jsis_test_checks_ds", 2, 3)
    cfg = get_jsis_cfg()
    cfg.DATASETS.TRAIN = ("jsis_test_checks_ds",)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.DATASETS.TEST = ("no_such_dataset",)
    with pytest.raises(UsageError, match="no_such_dataset"):
        check_datasets(cfg)
    cfg.DATASETS.TEST = ()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 6
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    with pytest.raises(UsageError, match="NUM_CLASSES=6.*K=5"):
        check_datasets(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    with pytest.raises(UsageError, match="ROI_HEADS.NUM_CLASSES=3.*T=2"):
        check_datasets(cfg)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    check_datasets(cfg)


def test_output_dir_not_writable_and_no_silent_overwrite(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits: use a path under a file
            target = str(tmp_path / "afile" / "out")
            (tmp_path / "afile").write_text("x")
        else:
            target = str(ro / "out")
        with pytest.raises(UsageError, match="not writable"):
            check_output_dir(target)
    finally:
        os.chmod(ro, 0o700)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(UsageError, match="--resume.*nothing was overwritten"):
        check_output_dir(str(run))
    check_output_dir(str(run), resume=True)
    check_output_dir(str(run), eval_only=True)


def test_checkpoint_for_other_class_count_is_rejected(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 9, 1))
    other = torch.nn.Sequential(torch.nn.Conv2d(4, 7, 1))
    path = str(tmp_path / "model_final.pth")
    torch.save({"model": other.state_dict(), "iteration": 3}, path)
    with pytest.raises(
        UsageError, match=r"0.weight: checkpoint \(7, 4, 1, 1\) vs model \(9, 4, 1, 1\)"
    ):
        check_checkpoint_matches_model(model, path)
    torch.save({"model": model.state_dict()}, path)
    check_checkpoint_matches_model(model, path)
    with pytest.raises(UsageError, match="not found"):
        check_checkpoint_matches_model(model, str(tmp_path / "missing.pth"))


def test_syncbn_falls_back_to_bn_on_single_cpu_process(capture_log):
    # capture_log, not caplog: after a training test the jsis_d2 logger does not propagate
    log_lines = capture_log("jsis_d2.engine.checks")
    cfg = get_jsis_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "SyncBN"
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    fallback_syncbn(cfg)
    assert cfg.MODEL.RESNETS.NORM == "BN" and cfg.MODEL.SEM_SEG_HEAD.NORM == "GN"
    assert any("SyncBN" in m for m in log_lines)
