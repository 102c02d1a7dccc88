#!/usr/bin/env python
"""Paper Table 3 on the synthetic data: joint training vs semantic-only vs instance-only, the
same config and schedule; the two independently trained networks are merged with the same
heuristics to give their PQ.

    python tools/ablation.py [--output output/ablation] [--config-file CFG] [--opts K V ...]

CFG (the joint network; default the demo's) and its variants next to it, CFG's name with
_semantic_only / _instance_only (configs/Synthetic, configs/Mapillary-Vistas, configs/quick).

Writes OUTPUT/ablation.json and OUTPUT/ablation.md (mIoU, AP@0.5 (mask), PQ). Each variant
trains in OUTPUT/<variant> (re-running continues / re-evaluates, --resume semantics).
"""

import argparse
import json
import logging
import os
import sys

import jsis_d2  # noqa: F401
from jsis_d2.config import setup_cfg
from jsis_d2.data.datasets import make_synthetic_datasets
from jsis_d2.engine import Trainer
from jsis_d2.engine.launcher import RUN_LOGGERS, separate_run_logs
from jsis_d2.engine.launcher import main as launch_main
from jsis_d2.modeling.separate import SeparateNetworks

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser
from detectron2.evaluation import inference_on_dataset
from detectron2.utils.logger import setup_logger

DEFAULT_CONFIG = "configs/Synthetic/jsis_R18_C4_scratch_cpu.yaml"
BRANCHES = {"joint": ["semantic", "instance"], "semantic": ["semantic"], "instance": ["instance"]}
logger = logging.getLogger("jsis_d2.ablation")


def variant_configs(config_file):
    """{variant: config file}: ``config_file`` (joint) and, next to it, its
    ``<name>_semantic_only.yaml`` and ``<name>_instance_only.yaml`` (as configs/ holds them).
    ValueError (one line naming the file) when one is missing or has other branches."""
    stem, ext = os.path.splitext(config_file)
    files = {"joint": config_file}
    files.update({v: f"{stem}_{v}_only{ext}" for v in ("semantic", "instance")})
    for name, path in files.items():
        if not os.path.isfile(path):
            raise ValueError(
                f"{path} not found: the {name}-only variant of --config-file "
                f"{config_file} (MODEL.JSIS.BRANCHES {BRANCHES[name]})"
            )
        branches = list(setup_cfg(path).MODEL.JSIS.BRANCHES)
        if branches != BRANCHES[name]:
            raise ValueError(
                f"{path} has MODEL.JSIS.BRANCHES {branches}; the {name} variant "
                f"needs {BRANCHES[name]}"
            )
    return files


def _get(results, section, key):
    v = (results or {}).get(section, {}).get(key)
    return None if v is None else round(float(v), 2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output", default="output/ablation")
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    args = p.parse_args(argv)
    try:
        files = variant_configs(args.config_file)
    except ValueError as e:
        sys.stderr.write(f"ablation: error: {e}\n")
        return 2
    make_synthetic_datasets()

    results = {}
    for name, config_file in files.items():
        out = os.path.join(args.output, name)
        train_args = default_argument_parser().parse_args(
            ["--config-file", config_file, "--resume", "OUTPUT_DIR", out] + list(args.opts)
        )
        with separate_run_logs():  # each run logs once, into its own log.txt
            results[name] = launch_main(train_args)

    # The two independently trained networks, merged with the same heuristics (own log).
    for logger_name in RUN_LOGGERS:
        setup_logger(os.path.join(args.output, "separate"), name=logger_name)
    models = {}
    for name in ("semantic", "instance"):
        cfg = setup_cfg(
            files[name], list(args.opts) + ["OUTPUT_DIR", os.path.join(args.output, name)]
        )
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
        models[name] = model.eval()
    cfg = setup_cfg(args.config_file, list(args.opts) + ["OUTPUT_DIR", args.output])
    dataset = cfg.DATASETS.TEST[0]
    pair = SeparateNetworks(models["semantic"], models["instance"])
    pair_results = inference_on_dataset(
        pair,
        Trainer.build_test_loader(cfg, dataset),
        Trainer.build_evaluator(cfg, dataset, os.path.join(args.output, "separate", "inference")),
    )

    rows = [
        (
            "Joint training",
            _get(results["joint"], "sem_seg", "mIoU"),
            _get(results["joint"], "segm", "AP50"),
            _get(results["joint"], "panoptic_seg", "PQ"),
        ),
        ("Semantic segmentation only", _get(results["semantic"], "sem_seg", "mIoU"), None, None),
        ("Instance segmentation only", None, _get(results["instance"], "segm", "AP50"), None),
        (
            "Both separate networks, merged",
            _get(pair_results, "sem_seg", "mIoU"),
            _get(pair_results, "segm", "AP50"),
            _get(pair_results, "panoptic_seg", "PQ"),
        ),
    ]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    md = ["| | mIoU | AP@0.5 (mask) | PQ |", "|---|---:|---:|---:|"]
    md += [f"| {r[0]} | {fmt(r[1])} | {fmt(r[2])} | {fmt(r[3])} |" for r in rows]
    md = "\n".join(md)
    with open(os.path.join(args.output, "ablation.json"), "w") as f:
        json.dump(
            {
                "config_file": args.config_file,
                "opts": args.opts,
                "rows": rows,
                "results": {**results, "separate": pair_results},
            },
            f,
            indent=2,
            default=float,
        )
    with open(os.path.join(args.output, "ablation.md"), "w") as f:
        f.write(md + "\n")
    logger.info("Ablation table (also in %s):\n%s", os.path.join(args.output, "ablation.md"), md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
