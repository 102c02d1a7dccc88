"""PPMHead: JSIS-Net's semantic branch (paper 2.1), a Pyramid Pooling Module + hybrid upsampling.

Shape legend: ``B`` images, ``C`` channels of the input feature (res4: 1024 for R50, 256 for
R18), ``h x w`` feature size (stride ``s_f``, 16 for res4), ``H x W`` padded input image size,
``K`` classes (all things and stuff, contiguous indices; void = ``ignore_value``).

    res4 [B, C, h, w]
      -> for each bin b: adaptive avg pool to b x b -> 1x1 conv (PPM_DIM) + norm + ReLU
         -> bilinear back to h x w                                    (pyramid levels)
      -> concat [res4, levels]  -> 3x3 conv (CONVS_DIM) + norm + ReLU -> dropout
      -> 1x1 classifier [B, K, h, w]
      -> ConvTranspose2d(K, K, kernel 2*stride, stride)  [B, K, h*stride, w*stride]
      -> bilinear resize to H x W                                      (hybrid upsampling)

Loss: ``loss_sem_seg`` = softmax cross-entropy over K classes, void pixels
(``ignore_value``, 255) ignored, mean over the non-void pixels. The head returns it
UNWEIGHTED: JSIS-Net applies lambda_6 (``MODEL.JSIS.LOSS_WEIGHTS.SEG``);
``MODEL.SEM_SEG_HEAD.LOSS_WEIGHT`` is not read here (JSISNet rejects a value other than 1.0).
"""

from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

__all__ = ["MatrixAdaptiveAvgPool2d", "PPMHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class PPMHead(nn.Module):
    """Pyramid Pooling Module semantic head with hybrid upsampling (see the module docstring)."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        bins: Sequence[int] = (1, 2, 3, 6),
        ppm_dim: int = 512,
        conv_dims: int = 512,
        norm: Optional[Union[str, Callable]] = "GN",
        dropout: float = 0.1,
        deconv_stride: int = 2,
        ignore_value: int = 255,
    ):
        """
        Args:
            input_shape: {name: ShapeSpec} of exactly one input feature (e.g. {"res4": ...}).
            num_classes: K (things + stuff). bins: output grid sizes of the pyramid levels.
            ppm_dim, conv_dims: channels of each pyramid level and of the fuse conv.
            norm: Detectron2 norm name ("GN", "BN", "SyncBN", "" for none) or callable.
            dropout: before the classifier. deconv_stride: of the learned transposed
                convolution (kernel 2*stride). ignore_value: label ignored by the loss (void).
        """
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(
                f"PPMHead takes exactly one input feature (MODEL.SEM_SEG_HEAD.IN_FEATURES), got "
                f"{sorted(input_shape)}"
            )
        if not bins or any(int(b) < 1 for b in bins):
            raise ValueError(f"PPMHead: MODEL.SEM_SEG_HEAD.PPM_BINS must be positive, got {bins}")
        if norm == "GN" and ppm_dim < 64:
            # GroupNorm(32, ppm_dim) on the 1x1 pyramid level normalizes groups of
            # ppm_dim / 32 values: one value is an error, and fewer than 2 is degenerate.
            raise ValueError(
                f"PPMHead: MODEL.SEM_SEG_HEAD.PPM_DIM = {ppm_dim} is too small for NORM 'GN' "
                f"(32 groups over a 1x1 pooled map); use PPM_DIM >= 64"
            )
        if deconv_stride < 1:
            raise ValueError(f"PPMHead: DECONV_STRIDE must be >= 1, got {deconv_stride}")
        ((self.in_feature, spec),) = input_shape.items()
        in_channels = spec.channels
        self.feature_stride = spec.stride
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.bins = [int(b) for b in bins]

        self.ppm = nn.ModuleList()
        for b in self.bins:
            conv = Conv2d(
                in_channels,
                ppm_dim,
                kernel_size=1,
                bias=not norm,
                norm=get_norm(norm, ppm_dim),
                activation=F.relu,
            )
            weight_init.c2_msra_fill(conv)
            self.ppm.append(nn.Sequential(nn.AdaptiveAvgPool2d(b), conv))
        self.fuse = Conv2d(
            in_channels + len(self.bins) * ppm_dim,
            conv_dims,
            kernel_size=3,
            padding=1,
            bias=not norm,
            norm=get_norm(norm, conv_dims),
            activation=F.relu,
        )
        weight_init.c2_msra_fill(self.fuse)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0.0)
        self.deconv_stride = deconv_stride
        self.deconv = nn.ConvTranspose2d(
            num_classes,
            num_classes,
            kernel_size=2 * deconv_stride,
            stride=deconv_stride,
            padding=deconv_stride // 2,
            bias=False,
        )
        _bilinear_init_(self.deconv)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_features = cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES {list(in_features)}: {missing} not produced by "
                f"the backbone (it gives {sorted(input_shape)}; MODEL.RESNETS.OUT_FEATURES)"
            )
        return {
            "input_shape": {k: input_shape[k] for k in in_features},
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "bins": list(cfg.MODEL.SEM_SEG_HEAD.PPM_BINS),
            "ppm_dim": cfg.MODEL.SEM_SEG_HEAD.PPM_DIM,
            "conv_dims": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
            "dropout": cfg.MODEL.SEM_SEG_HEAD.DROPOUT,
            "deconv_stride": cfg.MODEL.SEM_SEG_HEAD.DECONV_STRIDE,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        targets: Optional[torch.Tensor] = None,
        output_size: Optional[Tuple[int, int]] = None,
    ):
        """
        Args:
            features: {IN_FEATURE: float [B, C, h, w]}.
            targets: int64 [B, H, W] contiguous class per pixel (void = ignore_value), needed in
                training; its size is the output size.
            output_size: (H, W) of the padded input images; default (h, w) * feature stride.
        Returns:
            training: (None, {"loss_sem_seg": scalar, unweighted}).
            inference: (float [B, K, H, W] logits, {}).
        """
        x = self.layers(features)
        if targets is not None:
            size = tuple(targets.shape[-2:])
        elif output_size is not None:
            size = tuple(int(s) for s in output_size)
        else:
            feat = features[self.in_feature]
            size = tuple(int(s) * self.feature_stride for s in feat.shape[-2:])
        # float32 from here on (a no-op in float32): under autocast, casting the small map
        # before the resize is cheaper than casting the full-size logits after it.
        x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)
        if self.training:
            if targets is None:
                raise ValueError("PPMHead: training needs the semantic targets (sem_seg)")
            return None, self.losses(x, targets)
        return x, {}

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Features -> logits [B, K, h*stride, w*stride] (before the final bilinear resize)."""
        x = features[self.in_feature]
        size = x.shape[-2:]
        levels = [
            F.interpolate(lv(x), size, mode="bilinear", align_corners=False) for lv in self.ppm
        ]
        x = self.fuse(torch.cat([x] + levels, dim=1))
        x = self.predictor(self.dropout(x))
        return self.deconv(x)

    def losses(self, predictions: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Softmax CE of logits [B, K, H, W] vs int64 targets [B, H, W], void ignored."""
        loss = F.cross_entropy(
            predictions.float(), targets, reduction="mean", ignore_index=self.ignore_value
        )
        if not (targets != self.ignore_value).any():
            loss = predictions.sum() * 0.0  # all void: zero (CE would give NaN), keeps the graph
        return {"loss_sem_seg": loss}


class MatrixAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)`` for inputs of ONE spatial size ``input_size``, as
    two constant matrix products ``P_h @ x @ P_w^T`` (the bins of adaptive pooling: rows
    ``floor(i h / b)`` to ``ceil((i + 1) h / b)``, each weighted 1 / its length). Equal to the
    adaptive pooling up to float rounding; it exports to ONNX where adaptive pooling of a size
    the exporter sees as symbolic does not (used by :mod:`jsis_d2.export`, not in training).

    Input float [B, C, h, w] with (h, w) == ``input_size``; output [B, C, b_h, b_w].
    """

    def __init__(self, output_size, input_size: Tuple[int, int]):
        super().__init__()
        out = (output_size, output_size) if isinstance(output_size, int) else output_size
        self.register_buffer("p_h", _adaptive_pool_matrix(int(out[0]), int(input_size[0])))
        self.register_buffer("p_w", _adaptive_pool_matrix(int(out[1]), int(input_size[1])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.p_h.to(x.dtype), x), self.p_w.to(x.dtype).t())


def _adaptive_pool_matrix(bins: int, size: int) -> torch.Tensor:
    """float [bins, size]: row i averages the input positions of adaptive pooling's bin i."""
    m = torch.zeros(bins, size)
    for i in range(bins):
        start, end = (i * size) // bins, -((-(i + 1) * size) // bins)
        m[i, start:end] = 1.0 / (end - start)
    return m


def _bilinear_init_(deconv: nn.ConvTranspose2d) -> None:
    """Initialise a per-channel transposed conv as bilinear upsampling (FCN style)."""
    k = deconv.kernel_size[0]
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    kernel = filt[:, None] * filt[None, :]
    with torch.no_grad():
        deconv.weight.zero_()
        for c in range(min(deconv.in_channels, deconv.out_channels)):
            deconv.weight[c, c] = kernel
