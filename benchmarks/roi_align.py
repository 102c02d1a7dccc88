"""Benchmark: ROIAlign on the CPU, Detectron2's op (torchvision's kernel) vs the separable one.

``jsis_d2.modeling.roi_align.roi_align_separable`` pools as two matrix products; Detectron2's
``ROIAlign`` calls torchvision's CPU kernel (float32 only: under bf16 autocast it pools in
float32 and the result is cast back). For the pooling shapes of the project's models, in the
same run, interleaved (``benchmarks.timing.time_calls``), each side is timed

- forward only (inference: no autograd graph), and
- forward + backward (a training step's share: the gradient of the features),

in float32 and in bfloat16 (features in that dtype; torchvision's side under CPU autocast, as
the model runs it), and each side's error against torchvision in float32 with float32 ROIs.
Shapes (ROIAlignV2: aligned, adaptive sampling; random boxes of 1/8 to the whole image side):

- demo R18-C4 192x192, training: 4 images, res4 [256, 12, 12], 16 ROIs each, 12x12 bins;
- R50-C4 400x400, training: 1 image, res4 [1024, 25, 25], 512 ROIs, 14x14 bins;
- R50-C4 400x400, inference: 1 image, res4 [1024, 25, 25], 100 ROIs, 14x14 bins.
"""

import logging

import torch
from torchvision.ops import roi_align

from jsis_d2.modeling.roi_align import roi_align_separable

from detectron2.layers import ROIAlign

from .report import QUICK_NOTE, markdown_table
from .timing import load_average, time_calls

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "markdown", "SHAPES"]

#: name -> (images, channels, feature side, ROIs per image, bins, image side, training).
SHAPES = {
    "demo R18-C4 192x192, train": (4, 256, 12, 16, 12, 192, True),
    "R50-C4 400x400, train": (1, 1024, 25, 512, 14, 400, True),
    "R50-C4 400x400, inference": (1, 1024, 25, 100, 14, 400, False),
}
QUICK_SHAPES = {"tiny, train": (2, 16, 8, 4, 4, 64, True)}
DTYPES = ("float32", "bfloat16")


def add_arguments(parser):
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 20)")
    parser.add_argument("--seed", type=int, default=0)


def _rois(images, per_image, side, generator):
    """[images * per_image, 5] float32 boxes (batch index, x1, y1, x2, y2) inside the image."""
    n = images * per_image
    wh = side * (0.125 + 0.875 * torch.rand(n, 2, generator=generator))
    xy = (side - wh) * torch.rand(n, 2, generator=generator)
    batch = torch.arange(images).repeat_interleave(per_image).float()[:, None]
    return torch.cat([batch, xy, xy + wh], dim=1)


def _side(pool, features, rois, dtype, train):
    """A zero-argument call: pool ``features`` (and backpropagate a fixed gradient if train)."""
    grad = None

    def call():
        nonlocal grad
        x = features.detach().requires_grad_(train)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = pool(x, rois)
        if train:
            if grad is None:
                grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
            out.backward(grad.to(out.dtype))
            return x.grad
        return out

    return call


def _measure(name, shape, dtype_name, repeats, seed):
    images, channels, fside, per_image, bins, side, train = shape
    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(images, channels, fside, fside, generator=g).to(dtype)
    rois = _rois(images, per_image, side, g)
    args = ((bins, bins), 1.0 / (side // fside), 0, True)  # ROIAlignV2: adaptive, aligned
    d2 = ROIAlign(*args)

    def separable(x, r):
        return roi_align_separable(x, r, *args)

    def torchvision_roi_align(x, r):
        return roi_align(x, r, *args)

    grad_ctx = torch.enable_grad() if train else torch.no_grad()
    with grad_ctx:
        times = time_calls(
            {
                "d2": _side(d2, features, rois, dtype, train),
                "separable": _side(separable, features, rois, dtype, train),
            },
            repeats,
            warmup=2,
        )
        # the reference: torchvision in float32 on the same (rounded) features, float32 ROIs
        ref = _side(torchvision_roi_align, features.float(), rois, torch.float32, train)()
    scale = ref.abs().max().clamp(min=1e-12)
    row = {
        "shape": name,
        "dtype": dtype_name,
        "mode": "forward + backward" if train else "forward",
        "rois": images * per_image,
        "d2_ms": 1e3 * times["d2"].median,
        "separable_ms": 1e3 * times["separable"].median,
        "range_ms": {k: [1e3 * min(t.wall), 1e3 * max(t.wall)] for k, t in times.items()},
        **{
            f"{k}_err": float((times[k].last.float() - ref).abs().max() / scale)
            for k in ("d2", "separable")
        },
    }
    row["speedup"] = row["d2_ms"] / row["separable_ms"]
    logger.info("roi_align: %s", row)
    return row


def run(args):
    repeats = args.repeats or (2 if args.quick else 20)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    load_before = load_average()
    rows = [
        _measure(name, shape, dt, repeats, args.seed)
        for name, shape in shapes.items()
        for dt in DTYPES
    ]
    result = {
        "quick": bool(args.quick),
        "threads": args.threads,
        "repeats": repeats,
        "rows": rows,
        "load_average": [load_before, load_average()],
    }
    result["markdown"] = markdown(result)
    return result


def _ms(row, side):
    """A side's median time, with the range of its calls for results that recorded it."""
    lo_hi = row.get("range_ms", {}).get(side)
    text = f"{row[side + '_ms']:.1f}"
    return f"{text} ({lo_hi[0]:.1f}-{lo_hi[1]:.1f})" if lo_hi else text


def markdown(r):
    """The result's markdown (its block in docs/BENCHMARKS.md)."""
    table = [
        [
            x["shape"],
            x["dtype"],
            x["mode"],
            x["rois"],
            _ms(x, "d2"),
            _ms(x, "separable"),
            f"**{x['speedup']:.2f}x**",
            f"{x['d2_err']:.1e}",
            f"{x['separable_err']:.1e}",
        ]
        for x in r["rows"]
    ]
    load = r["load_average"]
    text = "\n".join(
        [
            f"ROIAlign on the CPU, {r['threads']} thread(s), median of {r['repeats']} calls after "
            "2 warm-ups, the two sides interleaved; ROIAlignV2 (aligned, adaptive sampling), "
            "random boxes. Error: max |output - reference| / max |reference| (training: of the "
            "feature gradient), the reference being torchvision in float32 on the same "
            "features with float32 ROIs (Detectron2's op casts the ROIs to the features' "
            f"dtype). Load average {load[0]} -> {load[1]} (1-min, before -> after).",
            "",
            markdown_table(
                [
                    "shape",
                    "dtype",
                    "measured",
                    "ROIs",
                    "Detectron2 / torchvision (ms)",
                    "separable (ms)",
                    "speed-up",
                    "Detectron2 error",
                    "separable error",
                ],
                table,
                "lllrrrrrr",
            ),
        ]
    )
    return text + (QUICK_NOTE if r["quick"] else "")
