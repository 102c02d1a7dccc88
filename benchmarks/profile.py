"""Benchmark: where the time of a training step goes (torch.profiler), the demo's model.

The demo config (``configs/Synthetic/jsis_R18_C4_scratch_cpu.yaml``, or ``--config-file``)
trains from the synthetic training split through the project's own train loader, model and
optimizer (:class:`~jsis_d2.engine.trainer.Trainer`'s ``build_*``), ``--warmup`` steps
untimed, then ``--steps`` steps under ``torch.profiler`` (CPU activities), for each precision
variant (``--variants``: those of the ``precision`` benchmark). Each variant lives in its own
process and the profiled steps are interleaved (one step of each variant in turn:
``common.interleave``), so that load from other processes hits all variants alike. Reported
per variant:

* the wall time per step (the mean of the profiled steps' wall times, with their range; the
  profiler adds a few percent);
* phases: data loading, forward by branch (``record_function`` labels in
  :class:`~jsis_d2.modeling.meta_arch.JSISNet`: backbone, semantic head, RPN, ROI heads incl.
  their losses), backward, optimizer step (inclusive CPU time per step);
* the top operators by self CPU time, and how many operator calls a step makes.
"""

import logging
import tempfile

import torch

from .common import DEMO_CONFIG, QUICK_CONFIG, interleave, tiny_synthetic
from .precision import VARIANT_NAMES, VARIANTS
from .report import INTERLEAVED_NOTE, QUICK_NOTE, describe_load, markdown_table
from .timing import load_average, time_calls

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "run", "markdown", "PHASES"]

PHASES = (
    "jsis.data",
    "jsis.backbone",
    "jsis.sem_seg_head",
    "jsis.rpn",
    "jsis.roi_heads",
    "jsis.backward",
    "jsis.optimizer",
)


def add_arguments(parser):
    parser.add_argument("--config-file", default=None, help=f"default {DEMO_CONFIG}")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=sorted(VARIANTS),
        help="default: fp32 bf16_cl",
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="profiled steps (default 5)")
    parser.add_argument("--top", type=int, default=15, help="operators listed")


def _train_step_fn(config_file, variant, quick, root):
    """The project's train loader, model and optimizer for ``config_file`` + ``variant``;
    returns (one training step with ``record_function`` phase labels, cfg)."""
    from torch.profiler import record_function

    import jsis_d2  # noqa: F401
    from jsis_d2.config import setup_cfg
    from jsis_d2.data.datasets import make_synthetic_datasets
    from jsis_d2.engine.trainer import Trainer

    opts = ["MODEL.WEIGHTS", ""] + VARIANTS[variant]
    if quick:
        names = tiny_synthetic(root, "jsis_bench_prof", 4, 1)
        opts += ["DATASETS.TRAIN", (names["train"],)]
    else:
        make_synthetic_datasets()  # reused when present (deterministic)
    cfg = setup_cfg(config_file, opts)
    model = Trainer.build_model(cfg)
    model.train()
    opt = Trainer.build_optimizer(cfg, model)
    data = iter(Trainer.build_train_loader(cfg))

    def step():
        with record_function("jsis.data"):
            batch = next(data)
        losses = model(batch)
        loss = sum(losses.values())
        opt.zero_grad()
        with record_function("jsis.backward"):
            loss.backward()
        with record_function("jsis.optimizer"):
            opt.step()

    return step, cfg


class _ProfiledVariant:
    """One variant, built and warmed up, its steps run one at a time under torch.profiler
    (a side of :func:`common.interleave`: ``call`` times one step, ``finish`` returns the
    result row, see the module docstring)."""

    def __init__(self, config_file, variant, warmup, top, threads, quick, root):
        from torch.profiler import ProfilerActivity, profile

        from detectron2.utils.events import EventStorage

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.variant, self.top = variant, top
        self.step, self.cfg = _train_step_fn(config_file, variant, quick, root)
        self.storage = EventStorage(0)
        self.storage.__enter__()
        for _ in range(warmup):
            self.step()
        self.prof = profile(activities=[ProfilerActivity.CPU])
        self.prof.__enter__()
        self.wall = []

    def call(self) -> float:
        self.wall += time_calls({"step": self.step}, 1, warmup=0)["step"].wall
        return self.wall[-1]

    def finish(self) -> dict:
        self.prof.__exit__(None, None, None)
        self.storage.__exit__(None, None, None)
        row = _summarize(self.prof, self.variant, self.wall, self.top, self.cfg)
        row["wall_s_range"] = [min(self.wall), max(self.wall)]
        return row


def _summarize(prof, variant, wall, top, cfg):
    """The result row of one variant from its profiler and the wall times of its steps."""
    steps = len(wall)
    avg = prof.key_averages()
    phases = {e.key: e.cpu_time_total / 1e6 / steps for e in avg if e.key in PHASES}
    ops = [
        e
        for e in avg
        if not e.key.startswith(("jsis.", "autograd::", "Optimizer."))
        and not e.key.startswith("ProfilerStep")
    ]
    total_self = sum(e.self_cpu_time_total for e in ops) or 1.0
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "variant": variant,
        "wall_s_per_step": sum(wall) / steps,
        "phases_s_per_step": {p: phases.get(p, 0.0) for p in PHASES},
        "op_calls_per_step": sum(e.count for e in ops) / steps,
        "top_ops": [
            {
                "op": e.key,
                "calls_per_step": e.count / steps,
                "self_s_per_step": e.self_cpu_time_total / 1e6 / steps,
                "share": e.self_cpu_time_total / total_self,
            }
            for e in ops[:top]
        ],
        "threads": torch.get_num_threads(),
        "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        "input_size": list(cfg.INPUT.JSIS.FIXED_SIZE),
    }


def run(args):
    q = args.quick
    config_file = args.config_file or (QUICK_CONFIG if q else DEMO_CONFIG)
    variants = args.variants or ["fp32", "bf16_cl"]
    warmup = args.warmup or (1 if q else 3)
    steps = args.steps or (1 if q else 5)
    load0 = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {
            v: (_ProfiledVariant, (config_file, v, warmup, args.top, args.threads, q, tmp))
            for v in variants
        }
        rows = list(interleave(sides, steps).values())
    result = {
        "config_file": config_file,
        "quick": bool(q),
        "threads": args.threads,
        "warmup": warmup,
        "steps": steps,
        "interleaved": True,
        "rows": rows,
        "load_average": [load0, load_average()],
    }
    result["markdown"] = markdown(result)
    return result


_PHASE_NAMES = {
    "jsis.data": "data loading (mapper)",
    "jsis.backbone": "backbone (to res4)",
    "jsis.sem_seg_head": "PPM semantic head + loss",
    "jsis.rpn": "RPN + loss",
    "jsis.roi_heads": "ROI heads (res5 per ROI, box + mask) + losses",
    "jsis.backward": "backward",
    "jsis.optimizer": "optimizer step",
}


def markdown(r):
    """The result's markdown (its block in docs/BENCHMARKS.md)."""
    rows = r["rows"]
    x0 = rows[0]
    phases = [
        [_PHASE_NAMES[p]] + [f"{x['phases_s_per_step'][p]:.3f}" for x in rows] for p in PHASES
    ]
    phases.append(
        ["**wall time per step**"]
        + [
            f"**{x['wall_s_per_step']:.3f}**"
            + (" ({:.3f}-{:.3f})".format(*x["wall_s_range"]) if "wall_s_range" in x else "")
            for x in rows
        ]
    )
    phases.append(["operator calls per step"] + [f"{x['op_calls_per_step']:.0f}" for x in rows])
    lines = [
        f"Training step of {r['config_file']} ({x0['ims_per_batch']} images of "
        f"{x0['input_size'][0]}x{x0['input_size'][1]} per step, synthetic training split, the "
        f"project's loader, model and optimizer), CPU, {r['threads']} threads, torch.profiler "
        f"over {r['steps']} steps after {r['warmup']} warm-up. Phases: inclusive CPU time per "
        f"step. "
        + (
            f"Each variant in its own process, one step of each in turn (wall time: mean, "
            f"range in brackets). {INTERLEAVED_NOTE}. "
            if r.get("interleaved")
            else ""  # measured before the variants were interleaved
        )
        + describe_load(r["load_average"]),
        "",
        markdown_table(["phase (s/step)"] + [VARIANT_NAMES[x["variant"]] for x in rows], phases),
    ]
    for x in rows:
        ops = [
            [
                f"`{o['op']}`",
                f"{o['calls_per_step']:.0f}",
                f"{o['self_s_per_step']:.3f}",
                f"{100 * o['share']:.1f}%",
            ]
            for o in x["top_ops"]
        ]
        lines += [
            "",
            f"Top operators by self CPU time, {VARIANT_NAMES[x['variant']]}:",
            "",
            markdown_table(["operator", "calls/step", "self s/step", "share"], ops),
        ]
    if r["quick"]:
        lines.append(QUICK_NOTE)
    return "\n".join(lines)
