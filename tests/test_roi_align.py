"""The separable ROIAlign (jsis_d2.modeling.roi_align) against torchvision's roi_align."""

import pytest
import torch
from torchvision.ops import roi_align

from jsis_d2.modeling import roi_align as sep
from jsis_d2.precision import cpu_bf16_support

from detectron2.layers import ROIAlign


def _case(n=2, c=6, h=9, w=13, r=40, seed=0):
    """Features [n, c, h, w] and ROIs [r, 5] at stride 4, some reaching outside the map, some
    tiny (below one cell), over all images."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, c, h, w, generator=g)
    xy = torch.rand(r, 2, generator=g) * torch.tensor([w * 4.0, h * 4.0]) - 10
    wh = torch.rand(r, 2, generator=g) * 40 + 0.2
    wh[:5] = 0.5
    batch = torch.randint(0, n, (r, 1), generator=g).float()
    return feats, torch.cat([batch, xy, xy + wh], 1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("out", [(7, 7), (4, 6)])
def test_separable_matches_torchvision_in_float32(aligned, sampling_ratio, out):
    feats, rois = _case()
    ref = roi_align(feats, rois, out, 0.25, sampling_ratio, aligned)
    got = sep.roi_align_separable(feats, rois, out, 0.25, sampling_ratio, aligned)
    assert got.shape == ref.shape and got.is_contiguous()
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_separable_gradient_matches_torchvision():
    feats, rois = _case()
    a = feats.clone().requires_grad_()
    b = feats.clone().requires_grad_()
    gout = torch.randn(rois.shape[0], feats.shape[1], 5, 5)
    (roi_align(a, rois, (5, 5), 0.25, 0, True) * gout).sum().backward()
    (sep.roi_align_separable(b, rois, (5, 5), 0.25, 0, True) * gout).sum().backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-4)


def test_separable_chunks_give_the_same_result(monkeypatch):
    feats, rois = _case(r=25)
    whole = sep.roi_align_separable(feats, rois, (7, 7), 0.25, 0, True)
    monkeypatch.setattr(sep, "MAX_INTERMEDIATE", 7 * 6 * 13 * 3)  # 3 ROIs per chunk
    torch.testing.assert_close(sep.roi_align_separable(feats, rois, (7, 7), 0.25, 0, True), whole)


@pytest.mark.skipif(not cpu_bf16_support()["supported"], reason="no CPU bfloat16 support")
def test_low_precision_module_pools_bf16_on_cpu_and_defers_float32():
    feats, rois = _case()
    layer = ROIAlign((7, 7), 0.25, 0, aligned=True)
    holder = torch.nn.ModuleDict({"pool": layer})
    assert sep.use_separable_roi_align(holder) == 1
    new = holder["pool"]
    assert isinstance(new, sep.SeparableROIAlign) and new.output_size == (7, 7)
    ref = layer(feats, rois)
    torch.testing.assert_close(new(feats, rois), ref, rtol=0, atol=0)  # float32: Detectron2
    with torch.autocast("cpu", torch.bfloat16):
        low = new(feats.bfloat16(), rois)
    assert low.dtype == torch.bfloat16
    # bf16 features and weights, float32 accumulation: within a few bf16 ulps of the values
    torch.testing.assert_close(low.float(), ref, rtol=0, atol=0.03 * ref.abs().max().item())


def test_module_takes_the_separable_path_for_float32_training_only(monkeypatch):
    """float32 features that need a gradient (training) are pooled by the GEMMs, with
    torchvision's values and gradient; float32 inference (no grad) stays with Detectron2."""
    feats, rois = _case()
    layer = sep.SeparableROIAlign((5, 5), 0.25, 0, aligned=True)
    calls = []
    real = sep.roi_align_separable
    monkeypatch.setattr(sep, "roi_align_separable", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        torch.testing.assert_close(
            layer(feats, rois), roi_align(feats, rois, (5, 5), 0.25, 0, True)
        )
    assert calls == []
    a, b = feats.clone().requires_grad_(), feats.clone().requires_grad_()
    gout = torch.randn(rois.shape[0], feats.shape[1], 5, 5)
    got = layer(b, rois)
    assert calls == [1]
    (got * gout).sum().backward()
    (roi_align(a, rois, (5, 5), 0.25, 0, True) * gout).sum().backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-4)
    assert sep.takes_separable_path(feats.bfloat16()) and not sep.takes_separable_path(feats)
    with torch.no_grad():
        assert not sep.takes_separable_path(feats.clone().requires_grad_())
