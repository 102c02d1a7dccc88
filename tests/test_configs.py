"""Every config under configs/ merges (inheritance inside configs/ only) and builds a JSISNet on
CPU; the paper's values are where the configs say they are."""

import glob
import os

import pytest
import yaml

from jsis_d2.config import setup_cfg
from jsis_d2.modeling import JSISNet

from detectron2.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "configs")
CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True))


def rel(p):
    return os.path.relpath(p, CONFIG_DIR)


def load(name, *opts):
    return setup_cfg(os.path.join(CONFIG_DIR, name), ["MODEL.DEVICE", "cpu", *opts])


def test_expected_config_files_exist():
    names = {rel(p) for p in CONFIGS}
    assert {
        "Base-JSIS-R50-C4.yaml",
        "COCO-PanopticSegmentation/jsis_R50_C4_8ep.yaml",
        "Mapillary-Vistas/jsis_R50_C4_19ep.yaml",
        "Mapillary-Vistas/jsis_R50_C4_19ep_semantic_only.yaml",
        "Mapillary-Vistas/jsis_R50_C4_19ep_instance_only.yaml",
        "Synthetic/jsis_R18_C4_scratch_cpu.yaml",
        "Synthetic/jsis_R18_C4_scratch_cpu_bf16.yaml",
        "quick/jsis_R18_C4_quick.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=rel)
def test_config_builds_a_jsis_model_on_cpu(path):
    with open(path) as f:
        raw = yaml.safe_load(f)  # literal YAML only (no python tags)
    base = raw.get("_BASE_")
    if base is not None:
        target = os.path.normpath(os.path.join(os.path.dirname(path), base))
        assert target.startswith(CONFIG_DIR + os.sep) and os.path.isfile(target), base
    cfg = setup_cfg(path, ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    assert isinstance(model, JSISNet)
    assert cfg.MODEL.SEM_SEG_HEAD.NAME == "PPMHead"
    assert list(cfg.MODEL.RESNETS.OUT_FEATURES) == ["res4"]
    assert model.num_classes == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert model.num_things == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    branches = list(cfg.MODEL.JSIS.BRANCHES)
    assert model.semantic_on == ("semantic" in branches)
    assert model.instance_on == ("instance" in branches)


def test_base_holds_the_paper_solver_and_loss_weights():
    cfg = load("Base-JSIS-R50-C4.yaml")
    s = cfg.SOLVER
    assert (s.BASE_LR, s.MOMENTUM, s.GAMMA, s.WEIGHT_DECAY) == (0.075, 0.9, 0.5, 5.5e-5)
    lw = cfg.MODEL.JSIS.LOSS_WEIGHTS
    assert [lw.RPN_OBJ, lw.RPN_REG, lw.DET_CLS, lw.DET_REG, lw.MASK, lw.SEG] == [
        1.0,
        1.0,
        1.0,
        0.15,
        0.3,
        1.0,
    ]
    assert cfg.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads" and cfg.MODEL.MASK_ON
    assert cfg.MODEL.META_ARCHITECTURE == "JSISNet" and cfg.MODEL.JSIS.STUFF_AREA_THRESH == 4096


def test_coco_schedule():
    cfg = load("COCO-PanopticSegmentation/jsis_R50_C4_8ep.yaml")
    assert list(cfg.INPUT.JSIS.FIXED_SIZE) == [400, 400]
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.EPOCHS, list(cfg.SOLVER.STEPS_EPOCHS)) == (
        5,
        8,
        [4, 7],
    )
    assert (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.ROI_HEADS.NUM_CLASSES) == (133, 80)
    assert cfg.DATASETS.TRAIN == ("jsis_coco_2017_train_panoptic",)
    assert cfg.DATASETS.TEST == ("jsis_coco_2017_val_panoptic",)
    assert cfg.SOLVER.BASE_LR == 0.075


def test_mapillary_schedule_and_ablations():
    cfg = load("Mapillary-Vistas/jsis_R50_C4_19ep.yaml")
    assert list(cfg.INPUT.JSIS.FIXED_SIZE) == [512, 1024]
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.EPOCHS, list(cfg.SOLVER.STEPS_EPOCHS)) == (
        2,
        19,
        [7, 13],
    )
    assert (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.ROI_HEADS.NUM_CLASSES) == (65, 37)
    assert cfg.DATASETS.TRAIN == ("jsis_mapillary_vistas_train_panoptic",)
    for leaf, branches in (("semantic_only", ["semantic"]), ("instance_only", ["instance"])):
        c = load(f"Mapillary-Vistas/jsis_R50_C4_19ep_{leaf}.yaml")
        assert list(c.MODEL.JSIS.BRANCHES) == branches
        c.defrost()
        c.MODEL.JSIS.BRANCHES = list(cfg.MODEL.JSIS.BRANCHES)
        assert c == cfg  # the leaf differs only by its branches


@pytest.mark.parametrize(
    "joint", ["Synthetic/jsis_R18_C4_scratch_cpu.yaml", "quick/jsis_R18_C4_quick.yaml"]
)
def test_ablation_variants_differ_only_by_branches(joint, tmp_path):
    """tools/ablation.py trains the config files of configs/ (joint, *_semantic_only,
    *_instance_only); a missing variant is a one-line error naming its file."""
    import sys

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import ablation

    files = ablation.variant_configs(os.path.join(CONFIG_DIR, joint))
    cfg = load(joint)
    for name, path in files.items():
        c = load(path)
        assert list(c.MODEL.JSIS.BRANCHES) == ablation.BRANCHES[name]
        c.defrost()
        c.MODEL.JSIS.BRANCHES = list(cfg.MODEL.JSIS.BRANCHES)
        assert c == cfg
    lone = tmp_path / "lone.yaml"
    lone.write_text(f'_BASE_: "{os.path.join(CONFIG_DIR, joint)}"\n')
    with pytest.raises(ValueError, match=f"^{tmp_path}/lone_semantic_only.yaml not found"):
        ablation.variant_configs(str(lone))


def _flat(node, prefix=""):
    """{"A.B.C": value} of a (nested) CfgNode."""
    out = {}
    for k, v in node.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def test_bf16_demo_config_is_the_fp32_one_in_bf16_with_a_longer_schedule():
    """Only precision and schedule differ; the LR steps stay at the same fractions of the run."""
    fp32 = load("Synthetic/jsis_R18_C4_scratch_cpu.yaml")
    bf16 = load("Synthetic/jsis_R18_C4_scratch_cpu_bf16.yaml")
    assert bf16.SOLVER.AMP.ENABLED and bf16.SOLVER.AMP.PRECISION == "bfloat16"
    assert bf16.TEST.PRECISION == "bfloat16" and not fp32.SOLVER.AMP.ENABLED
    assert bf16.SOLVER.MAX_ITER > fp32.SOLVER.MAX_ITER
    for a, b in zip(bf16.SOLVER.STEPS, fp32.SOLVER.STEPS):
        assert abs(a / bf16.SOLVER.MAX_ITER - b / fp32.SOLVER.MAX_ITER) < 0.01
    same = ("SOLVER.AMP", "SOLVER.MAX_ITER", "SOLVER.STEPS", "TEST.PRECISION")
    diff = {k for k, v in _flat(bf16).items() if _flat(fp32).get(k) != v}
    assert diff and all(k.startswith(same) for k in diff), diff


def test_from_scratch_cpu_config():
    cfg = load("Synthetic/jsis_R18_C4_scratch_cpu.yaml")
    m = cfg.MODEL
    assert m.WEIGHTS == "" and m.RESNETS.DEPTH == 18 and m.RESNETS.RES2_OUT_CHANNELS == 64
    assert m.RESNETS.NORM == "GN" and m.BACKBONE.FREEZE_AT == 0 and m.SEM_SEG_HEAD.NORM == "GN"
    assert (m.SEM_SEG_HEAD.NUM_CLASSES, m.ROI_HEADS.NUM_CLASSES) == (9, 4)
    assert cfg.DATASETS.TRAIN == ("jsis_synthetic_train",)
    assert cfg.DATASETS.TEST == ("jsis_synthetic_val",)
    assert m.JSIS.STUFF_AREA_THRESH < 128 * 128 // 16
    # GroupNorm also in the ROI res5 head (Res5ROIHeads reads MODEL.RESNETS.NORM)
    import torch

    model = build_model(cfg)
    assert any(isinstance(x, torch.nn.GroupNorm) for x in model.roi_heads.res5.modules())
    assert not any("FrozenBatchNorm" in type(x).__name__ for x in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_overfit_check_keeps_enough_test_proposals():
    """tools/overfit_check.py's config builds on the synthetic demo config, whose 10 test
    proposals suit ~4.5 objects per image but cap RPN recall on the COCO images (40 %, PQ 63
    vs 85)."""
    import sys

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import overfit_check

    cfg = setup_cfg(os.path.join(ROOT, overfit_check.CONFIG))
    assert cfg.MODEL.RPN.POST_NMS_TOPK_TEST >= cfg.TEST.DETECTIONS_PER_IMAGE == 50
    assert cfg.SOLVER.OPTIMIZER == "SGD" and cfg.SOLVER.MAX_ITER == 2000
    assert cfg.DATASETS.TRAIN == cfg.DATASETS.TEST == (overfit_check.NAME,)
    assert (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.ROI_HEADS.NUM_CLASSES) == (133, 80)


def test_paper_configs_scale_linearly_with_the_number_of_processes():
    """REFERENCE_WORLD_SIZE 1 (the paper's one GPU): 8 processes train the same 8 epochs with
    8x the batch and LR, in 1/8 of the iterations (Detectron2's auto_scale_workers, applied to
    the epoch schedule resolved from the dataset size)."""
    from jsis_d2.engine.schedule import resolve_epoch_schedule

    from detectron2.engine import DefaultTrainer

    cfg = load("COCO-PanopticSegmentation/jsis_R50_C4_8ep.yaml")
    assert cfg.SOLVER.REFERENCE_WORLD_SIZE == 1
    cfg.defrost()
    resolve_epoch_schedule(cfg, num_images=118287)  # COCO train2017
    one = cfg.clone()
    eight = DefaultTrainer.auto_scale_workers(cfg, 8)
    assert (one.SOLVER.IMS_PER_BATCH, eight.SOLVER.IMS_PER_BATCH) == (5, 40)
    assert eight.SOLVER.BASE_LR == pytest.approx(8 * 0.075)
    assert one.SOLVER.MAX_ITER == 8 * 23658  # ceil(118287 / 5) iterations per epoch
    assert eight.SOLVER.MAX_ITER == 23658
    assert tuple(one.SOLVER.STEPS) == (4 * 23658, 7 * 23658)
    assert tuple(eight.SOLVER.STEPS) == (11829, 20701)  # epochs 4 and 7 of 23658/8 iterations
    # The CPU configs keep their schedule as written.
    assert load("Synthetic/jsis_R18_C4_scratch_cpu.yaml").SOLVER.REFERENCE_WORLD_SIZE == 0
    assert load("quick/jsis_R18_C4_quick.yaml").SOLVER.REFERENCE_WORLD_SIZE == 0
