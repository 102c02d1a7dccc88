"""PPMHead: shapes, hybrid upsampling, the void-ignoring loss, config errors."""

import pytest
import torch
from torch.nn import functional as F

from jsis_d2.config import get_jsis_cfg
from jsis_d2.modeling.ppm_head import PPMHead

from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head

K = 7
SHAPE = {"res4": ShapeSpec(channels=16, stride=16)}


def head(**kw):
    args = dict(num_classes=K, bins=(1, 2, 3), ppm_dim=64, conv_dims=32, norm="GN", dropout=0.1)
    args.update(kw)
    torch.manual_seed(0)
    return PPMHead(SHAPE, **args)


def feats(b=2, h=5, w=7):
    return {"res4": torch.randn(b, 16, h, w, generator=torch.Generator().manual_seed(1))}


def test_registered_and_built_from_config():
    assert SEM_SEG_HEADS_REGISTRY.get("PPMHead") is PPMHead
    cfg = get_jsis_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NAME = "PPMHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res4"]
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = K
    cfg.MODEL.SEM_SEG_HEAD.PPM_BINS = [1, 3]
    cfg.MODEL.SEM_SEG_HEAD.PPM_DIM = 64
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    cfg.MODEL.SEM_SEG_HEAD.DECONV_STRIDE = 4
    h = build_sem_seg_head(cfg, {"res4": ShapeSpec(channels=16, stride=16)})
    assert isinstance(h, PPMHead) and h.bins == [1, 3] and len(h.ppm) == 2
    assert [m[0].output_size for m in h.ppm] == [1, 3]
    assert h.fuse.in_channels == 16 + 2 * 64 and h.fuse.out_channels == 32
    assert h.deconv.stride == (4, 4) and h.deconv.kernel_size == (8, 8)
    assert h.predictor.out_channels == K and isinstance(h.fuse.norm, torch.nn.GroupNorm)


def test_inference_shapes_follow_output_size_and_stride():
    h = head().eval()
    x = feats(h=5, w=7)
    assert h.layers(x).shape == (2, K, 10, 14)  # transposed conv: x DECONV_STRIDE
    out, losses = h(x, None, output_size=(77, 109))  # not a multiple of the stride
    assert out.shape == (2, K, 77, 109) and losses == {}
    out, _ = h(x)
    assert out.shape == (2, K, 80, 112)  # default: feature size x feature stride


def test_hybrid_upsampling_deconv_is_learned_and_starts_bilinear():
    h = head()
    assert h.deconv.weight.requires_grad
    # a constant map stays constant inside after the bilinear-initialized transposed conv
    y = h.deconv(torch.ones(1, K, 6, 6))
    assert torch.allclose(y[:, :, 2:-2, 2:-2], torch.ones(1, K, 8, 8))
    # and classes do not mix at init
    z = torch.zeros(1, K, 6, 6)
    z[:, 3] = 1.0
    y = h.deconv(z)
    assert y[:, 3].abs().sum() > 0 and y[:, [0, 1, 2, 4, 5, 6]].abs().sum() == 0


def test_loss_is_ce_ignoring_void_and_gradients_reach_every_part():
    h = head(dropout=0.0).train()
    x = feats()
    t = torch.randint(0, K, (2, 37, 50), generator=torch.Generator().manual_seed(2))
    t[:, :10] = 255
    preds, losses = h(x, t)
    assert preds is None and set(losses) == {"loss_sem_seg"}
    logits = F.interpolate(h.layers(x), size=(37, 50), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(logits, t, ignore_index=255)
    assert torch.allclose(losses["loss_sem_seg"], expected)
    # changing the logits' targets only at void pixels changes nothing
    t2 = t.clone()
    t2[:, :5] = 255
    t2[:, 5:10] = 255
    assert torch.allclose(h(x, t2)[1]["loss_sem_seg"], expected)
    losses["loss_sem_seg"].backward()
    for name in ("deconv.weight", "predictor.weight", "fuse.weight", "ppm.0.1.weight"):
        g = dict(h.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_all_void_target_gives_zero_finite_loss():
    h = head().train()
    t = torch.full((2, 20, 20), 255, dtype=torch.long)
    loss = h(feats(), t)[1]["loss_sem_seg"]
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()


def test_training_without_targets_raises():
    with pytest.raises(ValueError, match="needs the semantic targets"):
        head().train()(feats())


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="PPM_DIM = 32 is too small for NORM 'GN'"):
        head(ppm_dim=32)
    with pytest.raises(ValueError, match="exactly one input feature"):
        PPMHead(
            {"res4": ShapeSpec(channels=8, stride=16), "res3": ShapeSpec(channels=8, stride=8)},
            num_classes=K,
        )
    with pytest.raises(ValueError, match="PPM_BINS"):
        head(bins=[0, 2])
    cfg = get_jsis_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NAME = "PPMHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res5"]
    with pytest.raises(ValueError, match=r"IN_FEATURES \['res5'\].*not produced"):
        build_sem_seg_head(cfg, SHAPE)
    h = head(norm="", ppm_dim=8)  # no norm: small PPM_DIM allowed
    assert h.fuse.norm is None
