"""Benchmark: hardware efficiency. Achieved GFLOP/s of JSIS-Net inference vs the machine's
dense convolution throughput, both measured in the same run (same process, same threads).

- JSIS-Net R50-C4 (``configs/Base-JSIS-R50-C4.yaml``, random weights, GN, CPU; test
  proposals / detections as in the joint benchmark, score threshold 0), one image of
  ``--size``. FLOPs: fvcore (one fused multiply-add = one FLOP, i.e. MACs; element-wise ops
  not counted) of the network without postprocessing. Time: the same network call
  (``model.inference(..., do_postprocess=False)``), and the backbone alone, median of
  ``--repeats`` after a warm-up. The full call (with mask pasting + panoptic merge) is also
  timed and reported.
- Dense reference: ``torch.nn.functional.conv2d`` 256 -> 256 channels, 3x3, on a
  1x256x128x128 input (9.66 GMACs), median of ``--repeats``, in fp32 and, where the CPU has
  bfloat16 support (:func:`jsis_d2.precision.cpu_bf16_support`), under bf16 autocast, each
  in NCHW and channels_last. The machine's peak is the best of these rates; the network is
  compared with that peak (``ratio``), not with fp32 alone. Where bf16 is supported the
  network is also timed with ``TEST.PRECISION bfloat16`` + ``MODEL.JSIS.CHANNELS_LAST``.

The two are timed interleaved (one of each per repeat) so that load from other processes hits
both alike. Ratio = achieved / dense: how much of the machine's convolution throughput the
whole network reaches (ROI-sized batches, GroupNorm, ROIAlign, NMS and Python overhead are
what it loses to).
"""

import logging

import torch

from jsis_d2.precision import autocast, cpu_bf16_support

from .common import FLOP_MODULES, build_jsis, count_flops, flop_analysis, random_inputs
from .report import QUICK_NOTE, describe_load, markdown_table, with_spread, yes_no
from .timing import load_average, time_calls

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "dense_conv_gmacs"]


def add_arguments(parser):
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="JSIS-Net input (default 400 400; quick 128 128)",
    )
    parser.add_argument("--depth", type=int, default=None, help="default 50, quick 18")
    parser.add_argument("--proposals", type=int, default=None, help="default 100, quick 20")
    parser.add_argument("--detections", type=int, default=None, help="default 100, quick 10")
    parser.add_argument(
        "--conv",
        type=int,
        nargs=3,
        default=None,
        metavar=("C", "H", "W"),
        help="dense conv: C->C 3x3 on 1xCxHxW (default 256 128 128; quick 64 64 64)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="default 5, quick 2")


def dense_conv_gmacs(c, h, w, k=3):
    """MACs (in G) of a C->C kxk stride-1 'same' conv on 1xCxHxW."""
    return c * c * k * k * h * w / 1e9


#: Dense-conv variant -> (autocast dtype, channels_last, markdown name); bf16 ones only where
#: the CPU supports bf16.
CONV_VARIANTS = {
    "fp32": (torch.float32, False, "fp32"),
    "fp32_cl": (torch.float32, True, "fp32, channels_last"),
    "bf16": (torch.bfloat16, False, "bf16 autocast"),
    "bf16_cl": (torch.bfloat16, True, "bf16 autocast, channels_last"),
}


def _conv_call(x, weight, dtype, cl):
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)

    def f():
        with autocast("cpu", dtype):
            return torch.nn.functional.conv2d(x, weight, padding=1)

    return f


def _settings(args):
    q = args.quick
    return {
        "size": list(args.size or ((128, 128) if q else (400, 400))),
        "depth": args.depth or (18 if q else 50),
        "proposals": args.proposals or (20 if q else 100),
        "detections": args.detections or (10 if q else 100),
        "conv": list(args.conv or ((64, 64, 64) if q else (256, 128, 128))),
        "repeats": args.repeats or (2 if q else 5),
    }


def _models(s, quick, bf16):
    """The fp32 model and, with ``bf16``, the same weights with bf16 + channels_last."""
    kw = dict(
        depth=s["depth"],
        size=tuple(s["size"]),
        post_nms_test=s["proposals"],
        detections=s["detections"],
        extra=["MODEL.RESNETS.WIDTH_PER_GROUP", 8] if quick else [],
    )
    torch.manual_seed(0)
    model, cfg = build_jsis(**kw)
    model.eval()
    model_bf16 = None
    if bf16:
        torch.manual_seed(0)
        kw["extra"] = kw["extra"] + ["TEST.PRECISION", "bfloat16", "MODEL.JSIS.CHANNELS_LAST", True]
        model_bf16, _ = build_jsis(**kw)
        model_bf16.load_state_dict(model.state_dict())
        model_bf16.eval()
    return model, model_bf16, cfg


def _sides(model, model_bf16, inputs, images, conv, bf16):
    """Name -> zero-argument call: the dense-conv variants and the network's parts."""
    c, ch, cw = conv
    x = torch.randn(1, c, ch, cw)
    weight = torch.randn(c, c, 3, 3) * 0.01
    fns = {
        f"conv_{k}": _conv_call(x, weight, dt, cl)
        for k, (dt, cl, _) in CONV_VARIANTS.items()
        if bf16 or dt == torch.float32
    }
    fns.update(
        {
            "network": lambda: model.inference(inputs, do_postprocess=False),
            "backbone": lambda: model.backbone(images),
            "full": lambda: model(inputs),
        }
    )
    if model_bf16 is not None:
        fns["network_bf16_cl"] = lambda: model_bf16.inference(inputs, do_postprocess=False)
    return fns


def run(args):
    q = args.quick
    torch.set_num_threads(args.threads)
    s = _settings(args)
    h, w = s["size"]
    load0 = load_average()
    support = cpu_bf16_support()
    model, model_bf16, cfg = _models(s, q, support["supported"])
    inputs = random_inputs(
        h,
        w,
        1,
        num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        num_things=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
    )
    with torch.no_grad():
        images = model.preprocess_image(inputs).tensor
        fns = _sides(model, model_bf16, inputs, images, s["conv"], support["supported"])
        times = time_calls(fns, s["repeats"], warmup=1)
        flops = count_flops(model, inputs, FLOP_MODULES)
        bb_flops = float(flop_analysis(model.backbone, (images,)).total())
    res = {
        "threads": torch.get_num_threads(),
        "quick": bool(q),
        **{k: s[k] for k in ("size", "depth", "proposals", "detections", "repeats")},
        "cpu_bf16": support,
    }
    res.update(_rates({k: t.median for k, t in times.items()}, s["conv"], flops, bb_flops))
    res["times_s"] = {k: t.summary()["times_s"] for k, t in times.items()}
    res["load_average"] = [load0, load_average()]
    res["markdown"] = markdown(res)
    return res


def _rates(med, conv, flops, bb_flops):
    """Result entries from the median times: GMAC/s of each side, vs fp32 conv and vs peak."""
    conv_g = dense_conv_gmacs(*conv)
    conv_rates = {k[5:]: conv_g / t for k, t in med.items() if k.startswith("conv_")}
    peak_name = max(conv_rates, key=conv_rates.get)
    net_g, bb_g = flops["total"] / 1e9, bb_flops / 1e9
    rest_t = max(med["network"] - med["backbone"], 1e-9)
    res = {
        "dense_conv": {
            "shape": [1, *conv],
            "kernel": 3,
            "gmacs": conv_g,
            "median_s": med["conv_fp32"],
            "gmacs_per_s": conv_rates["fp32"],
        },
        "dense_conv_variants": {
            k: {"median_s": med[f"conv_{k}"], "gmacs_per_s": v} for k, v in conv_rates.items()
        },
        "peak": {"variant": peak_name, "gmacs_per_s": conv_rates[peak_name]},
        "network": {
            "gmacs": net_g,
            "median_s": med["network"],
            "gmacs_per_s": net_g / med["network"],
            "gmacs_by_module": {k: v / 1e9 for k, v in flops["by_module"].items()},
        },
        "backbone": {
            "gmacs": bb_g,
            "median_s": med["backbone"],
            "gmacs_per_s": bb_g / med["backbone"],
        },
        "heads": {
            "gmacs": net_g - bb_g,
            "median_s": rest_t,
            "gmacs_per_s": (net_g - bb_g) / rest_t,
        },
        "full_call_median_s": med["full"],
    }
    if "network_bf16_cl" in med:
        res["network_bf16_cl"] = {
            "gmacs": net_g,
            "median_s": med["network_bf16_cl"],
            "gmacs_per_s": net_g / med["network_bf16_cl"],
        }
    for k in ("network", "backbone", "heads", "network_bf16_cl"):
        if k in res:
            res[k]["vs_dense"] = res[k]["gmacs_per_s"] / conv_rates["fp32"]
            res[k]["vs_peak"] = res[k]["gmacs_per_s"] / conv_rates[peak_name]
    res["ratio_fp32_conv"] = res["network"]["vs_dense"]
    res["ratio"] = res["network"]["vs_peak"]
    return res


_NETWORK_ROWS = (
    ("network", "JSIS-Net inference fp32 (network, no postprocessing)"),
    ("backbone", "  backbone (to res4)"),
    ("heads", "  rest: RPN + ROI heads (res5 per ROI) + PPM head"),
    ("network_bf16_cl", "JSIS-Net inference bf16 + channels_last (network)"),
)


def _time_cell(r, key, median):
    """The median time, with the range of the interleaved runs where they were recorded (the
    "rest" row is a difference of two medians: no runs of its own)."""
    times = r.get("times_s", {}).get(key)
    return with_spread(median, times, 3) if times else f"{median:.3f}"


def markdown(r):
    """The result's markdown (its block in docs/BENCHMARKS.md)."""
    d = r["dense_conv"]
    s = r.get("cpu_bf16", {})
    peak = r["peak"]["gmacs_per_s"]
    conv = f"dense conv2d {d['shape'][1]}->{d['shape'][1]} 3x3 on {'x'.join(map(str, d['shape']))}"
    rows = [
        [
            f"{conv}, {CONV_VARIANTS[k][2]}{' (peak)' if k == r['peak']['variant'] else ''}",
            f"{d['gmacs']:.2f}",
            _time_cell(r, f"conv_{k}", v["median_s"]),
            f"{v['gmacs_per_s']:.1f}",
            f"{v['gmacs_per_s'] / d['gmacs_per_s']:.2f}",
            f"{v['gmacs_per_s'] / peak:.2f}",
        ]
        for k, v in r["dense_conv_variants"].items()
    ] + [
        [
            name,
            f"{r[k]['gmacs']:.2f}",
            _time_cell(r, k, r[k]["median_s"]),
            f"{r[k]['gmacs_per_s']:.1f}",
            f"{r[k]['vs_dense']:.2f}",
            f"{r[k]['vs_peak']:.2f}",
        ]
        for k, name in _NETWORK_ROWS
        if k in r
    ]
    best = r.get("network_bf16_cl", r["network"])
    lines = [
        f"Hardware efficiency, CPU (oneDNN bf16: {yes_no(s.get('supported'))}, "
        f"avx512_bf16: {yes_no(s.get('avx512_bf16'))}, amx_bf16: "
        f"{yes_no(s.get('amx_bf16'))}), {r['threads']} threads, median of "
        f"{r['repeats']} interleaved runs (their range in brackets); GFLOPs = fvcore GMACs (a "
        f"fused multiply-add counts once). JSIS-Net R{r['depth']}-C4 random weights, "
        f"{r['size'][0]}x{r['size'][1]}, {r['proposals']} proposals + {r['detections']} "
        f"detections. Peak = the best dense-conv rate below. " + describe_load(r["load_average"]),
        "",
        markdown_table(
            ["what", "GMACs", "time (s) (range)", "GMAC/s", "vs fp32 dense conv", "vs peak"],
            rows,
        ),
        "",
        f"Achieved / peak = **{r['ratio']:.2f}** in fp32"
        + (f", **{best['vs_peak']:.2f}** in bf16 + channels_last" if "network_bf16_cl" in r else "")
        + f" (vs the fp32 dense conv alone: {r['ratio_fp32_conv']:.2f}). Full call with "
        f"mask pasting and panoptic merge (fp32): {r['full_call_median_s']:.3f} s.",
    ]
    if r["quick"]:
        lines.append(QUICK_NOTE)
    return "\n".join(lines)
