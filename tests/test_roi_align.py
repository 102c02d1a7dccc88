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


def _far_case():
    """bf16 features [1, 8, 64, 64] at stride 16 and ROIs near x = 900 px (bf16 spacing 4 px)."""
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(1, 8, 64, 64, generator=g).bfloat16()
    x1 = 880 + 40 * torch.rand(20, 1, generator=g)
    y1 = 500 + 100 * torch.rand(20, 1, generator=g)
    rois = torch.cat([torch.zeros(20, 1), x1, y1, x1 + 61.3, y1 + 47.7], 1)
    ref = roi_align(feats.float(), rois, (7, 7), 1 / 16, 0, True)
    return feats, rois, ref


def test_low_precision_pooling_keeps_float32_roi_coordinates(monkeypatch):
    """Detectron2's ROIAlign casts the ROIs to the features' dtype (bf16: 4 px steps near
    900 px); ours keeps them float32 on the separable path and on the deferred one (CUDA,
    forced here on the CPU)."""
    feats, rois, ref = _far_case()
    tol = 0.02 * ref.abs().max().item()
    with torch.autocast("cpu", torch.bfloat16):
        d2 = ROIAlign((7, 7), 1 / 16, 0, aligned=True)(feats, rois)
        ours = sep.SeparableROIAlign((7, 7), 1 / 16, 0, aligned=True)
        separable = ours(feats, rois)
        monkeypatch.setattr(sep, "takes_separable_path", lambda x: False)
        deferred = ours(feats, rois)
    assert (d2.float() - ref).abs().max() > 5 * tol  # the quantized boxes, for contrast
    assert separable.dtype == deferred.dtype == torch.bfloat16
    torch.testing.assert_close(separable.float(), ref, rtol=0, atol=tol)
    torch.testing.assert_close(deferred.float(), ref, rtol=0, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_low_precision_pooling_keeps_float32_roi_coordinates():
    feats, rois, ref = _far_case()
    layer = sep.SeparableROIAlign((7, 7), 1 / 16, 0, aligned=True)
    with torch.autocast("cuda", torch.bfloat16):
        got = layer(feats.cuda(), rois.cuda())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float().cpu(), ref, rtol=0, atol=0.02 * ref.abs().max().item())
