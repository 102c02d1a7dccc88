"""ROIAlign as two matrix products on the CPU: low-precision (bfloat16/float16) features, and
training.

torchvision's CPU ``roi_align`` has no bfloat16 kernel: under autocast it casts the features to
float32, pools, and casts the [R, C, PH, PW] result back (a float32 kernel, a zero fill and an
output cast per call). Averaged bilinear sampling on a regular grid is separable: bin (ph, pw)
of ROI r is

    out[r, c, ph, pw] = sum_{y, x} Ay[r, ph, y] * F[c, y, x] * Ax[r, pw, x]

where Ay / Ax hold, per bin, the bilinear weights of its sample rows / columns divided by the
number of samples (zero for samples outside [-1, size], as torchvision). So the pooling is one
GEMM over rows and one batched GEMM over columns, which run in bfloat16 on oneDNN / MKL.
``roi_align_separable`` matches torchvision's ``roi_align`` (aligned or not, fixed or adaptive
sampling ratio) to float32 rounding; in bfloat16 its weights and intermediate are rounded too.

torchvision's CPU backward is a scatter, slow next to the two GEMMs' backward, so training
takes this path in float32 too. In float32 inference the two are close and which one wins
depends on the CPU, so it keeps torchvision's kernel. The measurements:
``tools/benchmark.py roi_align``, tabled in docs/BENCHMARKS.md.

:class:`SeparableROIAlign` is Detectron2's ``ROIAlign`` that takes this path on the CPU for
bfloat16 / float16 features and for features that need a gradient, and Detectron2's otherwise
(float32 inference, CUDA), with float32 ROI coordinates on every path.
"""

import torch
from torch import nn

from detectron2.layers import ROIAlign

__all__ = [
    "roi_align_separable",
    "takes_separable_path",
    "SeparableROIAlign",
    "use_separable_roi_align",
]

#: Largest [rows, C * W] intermediate per chunk of ROIs (elements; 32 M = 64 MiB in bf16).
MAX_INTERMEDIATE = 32 * 2**20
#: Feature dtypes pooled without a float32 round trip on the CPU (and with float32 ROIs).
LOW_PRECISION = (torch.bfloat16, torch.float16)


def _axis_weights(start, size, bins, grid, length):
    """Sampling weights along one axis.

    Args:
        start, size: [R] float32 ROI start and extent in feature cells.
        bins: output bins (PH or PW). grid: [R] float32 samples per bin (>= 1).
        length: feature size along the axis (H or W).
    Returns:
        [R, bins, length] float32: each bin's mean of its samples' bilinear weights.
    """
    n_max = int(grid.max())
    i = torch.arange(n_max, dtype=start.dtype, device=start.device)
    p = torch.arange(bins, dtype=start.dtype, device=start.device)
    bin_size = (size / bins)[:, None, None]
    coord = (
        start[:, None, None] + p[:, None] * bin_size + (i + 0.5) * bin_size / grid[:, None, None]
    )
    # torchvision: a sample beyond [-1, length] counts as 0; else clamp, and at the last cell
    # both taps are that cell.
    valid = (i < grid[:, None, None]) & (coord >= -1.0) & (coord <= length)
    c = coord.clamp(min=0)
    low = c.floor().clamp(max=length - 1)
    frac = torch.where(low >= length - 1, torch.zeros_like(c), c - low)
    low = low.long()
    high = (low + 1).clamp(max=length - 1)
    scale = valid.to(start.dtype) / grid[:, None, None]
    w = torch.zeros(start.shape[0], bins, length, dtype=start.dtype, device=start.device)
    w.scatter_add_(2, low, (1 - frac) * scale)
    w.scatter_add_(2, high, frac * scale)
    return w


def _weights(rois, output_size, spatial_scale, sampling_ratio, aligned, h, w):
    """(Ay [R, PH, H], Ax [R, PW, W]) float32 for ``rois`` [R, 5] (batch index, x1, y1, x2, y2
    in image pixels), as torchvision's roi_align samples them."""
    ph, pw = output_size
    r = rois.detach().float()
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (r[:, k] * spatial_scale - offset for k in range(1, 5))
    rw, rh = x2 - x1, y2 - y1
    if not aligned:  # legacy: ROIs at least one cell
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    if sampling_ratio > 0:
        gh = gw = torch.full_like(rh, float(sampling_ratio))
    else:
        gh, gw = torch.ceil(rh / ph).clamp(min=1), torch.ceil(rw / pw).clamp(min=1)
    return _axis_weights(y1, rh, ph, gh, h), _axis_weights(x1, rw, pw, gw, w)


def roi_align_separable(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """torchvision ``roi_align`` semantics, computed as two matrix products in ``features``'
    dtype.

    Args:
        features: [N, C, H, W]. rois: [R, 5] (batch index, x1, y1, x2, y2), image pixels.
        output_size: (PH, PW). spatial_scale: feature cells per pixel. sampling_ratio: samples
            per bin and axis (<= 0: adaptive, ceil(ROI size / bins)). aligned: half-pixel shift.
    Returns:
        [R, C, PH, PW] in ``features``' dtype (contiguous). Differentiable in ``features``,
        not in ``rois`` (as torchvision).
    """
    n, c, h, w = features.shape
    ph, pw = output_size
    num = rois.shape[0]
    ay, ax = _weights(rois, (ph, pw), spatial_scale, sampling_ratio, aligned, h, w)
    ay, ax = ay.to(features.dtype), ax.transpose(1, 2).to(features.dtype)  # [R,PH,H], [R,W,PW]
    batch = rois[:, 0].long()
    out = features.new_empty(num, c, ph, pw)
    chunk = max(1, MAX_INTERMEDIATE // (ph * c * w))
    for b in range(n):
        idx = torch.arange(num, device=rois.device) if n == 1 else (batch == b).nonzero()[:, 0]
        rows = features[b].permute(1, 0, 2).reshape(h, c * w)  # [H, C*W]
        for part in idx.split(chunk):
            t = torch.mm(ay[part].reshape(-1, h), rows)  # [r*PH, C*W]
            t = torch.bmm(t.view(len(part), ph * c, w), ax[part])  # [r, PH*C, PW]
            out[part] = t.view(len(part), ph, c, pw).transpose(1, 2)  # copy + reorder, once
    return out


def takes_separable_path(features: torch.Tensor) -> bool:
    """Whether :class:`SeparableROIAlign` pools ``features`` with :func:`roi_align_separable`:
    on the CPU, when they are bfloat16 / float16 (no float32 round trip) or need a gradient
    (training: its backward is GEMMs, not torchvision's scatter)."""
    if features.device.type != "cpu":
        return False
    return features.dtype in LOW_PRECISION or (torch.is_grad_enabled() and features.requires_grad)


class SeparableROIAlign(ROIAlign):
    """Detectron2's ``ROIAlign``; on the CPU, low-precision features and features that need a
    gradient go through :func:`roi_align_separable` (:func:`takes_separable_path`).

    ROI coordinates stay float32 on every path. Detectron2's ``ROIAlign`` casts them to the
    features' dtype: in bfloat16 a coordinate near 400 px moves to a multiple of 2 px, near
    1000 px of 4 px (float16: 0.25 / 0.5 px), which misplaces the pooled boxes (the error is
    measured by ``tools/benchmark.py roi_align``). So low-precision
    features elsewhere (CUDA) are pooled as autocast would pool them, in float32, but with
    float32 ROIs; float32 features go through Detectron2 unchanged."""

    def forward(self, input, rois):
        if takes_separable_path(input):
            with torch.autocast("cpu", enabled=False):
                return roi_align_separable(
                    input,
                    rois,
                    self.output_size,
                    self.spatial_scale,
                    self.sampling_ratio,
                    self.aligned,
                )
        if input.dtype not in LOW_PRECISION:
            return super().forward(input, rois)
        with torch.autocast(input.device.type, enabled=False):
            return super().forward(input.float(), rois.float()).to(input.dtype)


def use_separable_roi_align(module: nn.Module) -> int:
    """Replace every Detectron2 ``ROIAlign`` inside ``module`` by a
    :class:`SeparableROIAlign` with the same settings (no parameters: state dicts are
    unchanged). Returns how many were replaced."""
    count = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is ROIAlign:
                new = SeparableROIAlign(
                    child.output_size, child.spatial_scale, child.sampling_ratio, child.aligned
                )
                setattr(parent, name, new)
                count += 1
    return count
