"""SeparateNetworks: the paper's Table 3 baseline (two networks, merged with the same rules)."""

import pytest
import torch

from jsis_d2.config import setup_cfg
from jsis_d2.modeling.separate import SeparateNetworks

from detectron2.modeling import build_model


def _model(variant):
    cfg = setup_cfg(
        f"configs/quick/jsis_R18_C4_quick{variant}.yaml",
        ["MODEL.JSIS.INSTANCE_SCORE_THRESH", "0.0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
    )
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_pair_outputs_like_the_joint_network():
    pair = SeparateNetworks(_model("_semantic_only"), _model("_instance_only"))
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    out = pair([{"image": image, "height": 50, "width": 90}])[0]
    assert set(out) == {"sem_seg", "instances", "proposals", "panoptic_seg"}
    ids, info = out["panoptic_seg"]
    assert tuple(ids.shape) == (50, 90) and out["sem_seg"].shape[-2:] == (50, 90)
    assert out["instances"].image_size == (50, 90)
    # every thing segment is one of the instance model's detections, with its class
    for s in info:
        if s["isthing"]:
            assert s["category_id"] == int(out["instances"].pred_classes[s["instance_id"]])
    assert sorted(int(i) for i in ids.unique() if i > 0) == sorted(s["id"] for s in info)
    assert pair.instance_model.panoptic_on is False  # left as it was


def test_wrong_branch_models_are_rejected():
    with pytest.raises(ValueError, match="semantic_model"):
        SeparateNetworks(_model("_instance_only"), _model("_instance_only"))
    with pytest.raises(ValueError, match="instance_model"):
        SeparateNetworks(_model("_semantic_only"), _model(""))
