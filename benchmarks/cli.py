"""JSIS-Net benchmarks: each subcommand compares both sides in one run and reports ratios.

    python tools/benchmark.py SUBCOMMAND [--quick] [--output DIR] [options]
    python tools/benchmark.py all --quick        # every subcommand, small (CI smoke)
    python tools/benchmark.py readme --results DIR   # docs/BENCHMARKS.md tables <- DIR/<name>.json

(``python -m benchmarks ...`` from the repository root is the same.) Each subcommand lives in
``benchmarks/<name>.py`` with ``add_arguments(parser)``, ``run(args) -> dict`` and
``markdown(result) -> str``; results are written to ``DIR/<name>.json`` and ``DIR/<name>.md``.
Threads are pinned (``--threads``, default 2) and stated in every result.
"""

import argparse
import importlib
import json
import logging
import os
import sys

import torch

SUBCOMMANDS = {
    "merge": "jsis_panoptic_merge vs detectron2 / panopticapi combine heuristics",
    "mapper": "dataset mapper throughput (images/s) at 400x400 and 512x1024",
    "pq": "pq_compute vs panopticapi (vs hotcoco if installed) on generated images",
    "joint": "JSIS-Net vs two separate networks: latency, peak memory, train step",
    "panoptic_fpn": "JSIS-Net vs Detectron2 PanopticFPN R50: latency, memory, FLOPs",
    "topk": "test-time RPN post-NMS top-k: PQ vs latency (trained checkpoint)",
    "hw": "achieved GFLOP/s of JSIS-Net inference vs dense conv throughput",
    "profile": "where a training step's time goes (torch.profiler), the demo model",
    "roi_align": "ROIAlign on the CPU: Detectron2 / torchvision vs the separable GEMMs",
    "precision": "fp32 vs bf16 (autocast, channels_last): time, memory, PQ of one checkpoint",
    "deploy": "end to end: exported model in onnxruntime vs PyTorch eager fp32 / bf16",
}

logger = logging.getLogger("benchmarks")


def _available():
    out = {}
    for name, help_text in SUBCOMMANDS.items():
        try:
            out[name] = (importlib.import_module(f"benchmarks.{name}"), help_text)
        except ModuleNotFoundError as e:
            if e.name != f"benchmarks.{name}":
                raise
    return out


def _parser(mods):
    """(the CLI's parser, the parent parser of the options every subcommand takes)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true", help="small sizes/repeats (CI smoke)")
    common.add_argument("--output", default="output/benchmark", help="folder for JSON + markdown")
    common.add_argument("--threads", type=int, default=2, help="torch/numpy threads (pinned)")
    for name, (mod, help_text) in mods.items():
        mod.add_arguments(sub.add_parser(name, help=help_text, parents=[common]))
    sub.add_parser("all", help="run every subcommand with its defaults", parents=[common])
    p_readme = sub.add_parser(
        "readme", help="refill the benchmark tables of docs/BENCHMARKS.md from JSON"
    )
    p_readme.add_argument("--results", default="docs/benchmarks", help="folder of <name>.json")
    p_readme.add_argument(
        "--page", "--readme", dest="page", default="docs/BENCHMARKS.md", help="page to refill"
    )
    p_readme.add_argument("names", nargs="*", help="blocks to refill (default: all with a JSON)")
    return parser, common


def _readme(args):
    from .readme import ReadmeError, update_readme

    try:
        update_readme(args.page, args.results, args.names or None)
    except (ReadmeError, OSError) as e:
        logger.error("%s", e)
        return 1
    return 0


def _defaults(mod, args, common):
    """``all``: the subcommand's own defaults, with the shared --quick/--output/--threads."""
    p = argparse.ArgumentParser(parents=[common], add_help=False)
    mod.add_arguments(p)
    return p.parse_args(
        (["--quick"] if args.quick else [])
        + ["--output", args.output, "--threads", str(args.threads)]
    )


def _write(name, result, output, threads):
    """``output/<name>.json`` and, with a markdown entry, ``output/<name>.md`` (also stdout)."""
    result.setdefault("threads", threads)
    with open(os.path.join(output, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=2)
    md = result.get("markdown")
    if md:
        with open(os.path.join(output, f"{name}.md"), "w") as f:
            f.write(md + "\n")
        sys.stdout.write(md + "\n")


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    mods = _available()
    parser, common = _parser(mods)
    args = parser.parse_args(argv)
    if args.cmd == "readme":
        return _readme(args)
    torch.set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)
    names = list(mods) if args.cmd == "all" else [args.cmd]
    failed = []
    for name in names:
        mod = mods[name][0]
        logger.info("benchmark %s ...", name)
        try:
            result = mod.run(_defaults(mod, args, common) if args.cmd == "all" else args)
        except Exception as e:  # `all` goes on with the other subcommands, then fails
            if args.cmd != "all":
                raise
            logger.error("benchmark %s failed: %s", name, e)
            failed.append(name)
            continue
        _write(name, result, args.output, args.threads)
    if failed:
        logger.error("failed subcommands: %s", ", ".join(failed))
        return 1
    return 0
