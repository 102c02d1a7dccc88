"""Helpers shared by the benchmarks (models, memory, FLOPs, inputs). Not a subcommand.

- Isolated measurements: :func:`run_isolated` runs a module-level function in a fresh
  ``spawn`` process (one measurement per process), so that peak memory belongs to it alone.
  :func:`measure_interleaved` compares several models that way AND interleaved: each side
  lives in its own process, and the parent calls the sides in turn (A, B, A, B, ...), so that
  load from another process hits every side alike.
- Peak memory: the process's resident-set high-water mark from ``/proc/self/status``
  (``VmHWM``), reset with ``/proc/self/clear_refs`` (value 5) right before the measured phase,
  so the peak is that of the measured phase (model weights included, since they stay resident)
  and not of imports or model building. ``VmHWM`` belongs to the process's own address space
  (unlike ``getrusage(RUSAGE_SELF).ru_maxrss``, which a spawned child inherits from its parent
  at exec time on Linux). Where the reset is not allowed the peak covers the whole process and
  the result says so (``peak_reset``: False).
- FLOPs: fvcore's ``FlopCountAnalysis`` (:func:`flop_analysis`, the one place it is set up),
  which counts one fused multiply-add as one FLOP (so "FLOPs" below are MACs) and ignores
  element-wise ops.
- Synthetic model inputs: random uint8 images, random ground truth for training steps.
"""

import concurrent.futures
import logging
import multiprocessing
import time

import torch

from .timing import load_average, time_calls

logger = logging.getLogger(__name__)

#: The demo's config and checkpoint (``make demo``), and the quick smoke config.
DEMO_CONFIG = "configs/Synthetic/jsis_R18_C4_scratch_cpu.yaml"
DEMO_WEIGHTS = "output/demo/model_final.pth"
QUICK_CONFIG = "configs/quick/jsis_R18_C4_quick.yaml"

__all__ = [
    "run_isolated",
    "rss_mb",
    "peak_rss_mb",
    "reset_peak_rss",
    "random_inputs",
    "flop_analysis",
    "count_flops",
    "jsis_cfg",
    "build_jsis",
    "measure",
    "measure_interleaved",
    "interleave",
    "size_pairs",
    "tiny_synthetic",
]


# ---------------------------------------------------------------------------- processes
def run_isolated(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh ``spawn`` process; returns its (picklable) result.

    ``fn`` must be importable (a module-level function). Exceptions propagate."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        return ex.submit(fn, *args, **kwargs).result()


def _status_kb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb():
    """Current resident set size of this process in MiB (None where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def peak_rss_mb():
    """Resident-set high-water mark (VmHWM) of this process in MiB, since the last
    :func:`reset_peak_rss` (or process start); falls back to ru_maxrss."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0). Returns True when it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def size_pairs(values, option="--sizes"):
    """[H1, W1, H2, W2, ...] -> [(H1, W1), (H2, W2), ...]; an odd count is an error."""
    if len(values) % 2:
        raise ValueError(f"{option} takes H W pairs, got {values}")
    return [tuple(values[i : i + 2]) for i in range(0, len(values), 2)]


def tiny_synthetic(root, prefix, num_train, num_val, image_size=64):
    """Generate tiny synthetic train / val splits under ``root`` (reused when present) and
    register them as ``{prefix}_train`` / ``{prefix}_val``; returns {"train": name, "val": name}.
    """
    from jsis_d2.data.datasets import make_synthetic_datasets, register_synthetic_datasets

    make_synthetic_datasets(
        root, num_train=num_train, num_val=num_val, image_size=image_size, register=False
    )
    names = {"train": f"{prefix}_train", "val": f"{prefix}_val"}
    register_synthetic_datasets(root, names=names)
    return names


# ---------------------------------------------------------------------------- inputs
def random_inputs(h, w, n=1, train=False, num_classes=133, num_things=80, gt_per_image=8, seed=0):
    """Mapper-like dicts: "image" uint8 [3, H, W] (random), "height"/"width" = (H, W); with
    ``train``: "sem_seg" int64 [H, W] in [0, K) (blocks of random classes) and "instances"
    (``gt_per_image`` random boxes, gt_classes in [0, T), box-filling BitMasks [N, H, W])."""
    from detectron2.structures import BitMasks, Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        d = {
            "image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8),
            "height": h,
            "width": w,
        }
        if train:
            coarse = torch.randint(0, num_classes, (1, 1, h // 32 + 1, w // 32 + 1), generator=g)
            sem = torch.nn.functional.interpolate(coarse.float(), size=(h, w), mode="nearest")
            d["sem_seg"] = sem[0, 0].long()
            wh = torch.rand(gt_per_image, 2, generator=g) * torch.tensor([w, h]) * 0.4 + 8
            xy = torch.rand(gt_per_image, 2, generator=g) * (torch.tensor([w, h]) - wh)
            boxes = torch.cat([xy, xy + wh], 1).floor()
            masks = torch.zeros(gt_per_image, h, w, dtype=torch.bool)
            for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
                masks[i, y0:y1, x0:x1] = True
            inst = Instances((h, w))
            inst.gt_boxes = Boxes(boxes)
            inst.gt_classes = torch.randint(0, num_things, (gt_per_image,), generator=g)
            inst.gt_masks = BitMasks(masks)
            d["instances"] = inst
        out.append(d)
    return out


# ---------------------------------------------------------------------------- FLOPs
def _tensors(x):
    """All tensors inside nested lists/tuples/dicts/Instances/Boxes, in a fixed order."""
    from detectron2.structures import Boxes, Instances

    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, Boxes):
        return [x.tensor]
    if isinstance(x, Instances):
        return [t for k in sorted(x.get_fields()) for t in _tensors(x.get(k))]
    if isinstance(x, dict):
        return [t for k in sorted(x) for t in _tensors(x[k])]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    return []


class _RawInference(torch.nn.Module):
    """Traceable view of a Detectron2 model: images [B, 3, H, W] uint8 -> tuple of the
    tensors of ``model.inference(..., do_postprocess=False)`` (the network, without pasting
    masks at image size or the panoptic merge)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        inputs = [{"image": im} for im in images]
        return tuple(_tensors(self.model.inference(inputs, do_postprocess=False)))


def flop_analysis(module, args):
    """fvcore ``FlopCountAnalysis`` of ``module(*args)`` with its warnings off (the ops it
    skips are read from ``unsupported_ops()``). Detectron2's own FlopCountAnalysis is not
    used: ``detectron2.export`` imports caffe2 in v0.6."""
    import fvcore.nn

    fca = fvcore.nn.FlopCountAnalysis(module, args)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    fca.tracer_warnings("none")
    return fca


def count_flops(model, inputs, module_names=()):
    """fvcore FLOPs of one forward pass of ``model`` (eval mode) on ``inputs`` (list of dicts
    with "image" uint8 [3, H, W], all the same size), WITHOUT postprocessing (mask pasting and
    panoptic merge are not counted: no conv/matmul there). fvcore counts one fused
    multiply-add as one FLOP (so these are MACs) and skips element-wise ops; the ops it does
    not count are returned under "unsupported_ops" (op name -> calls).
    Returns {"total": float, "by_module": {dotted name: float}, "unsupported_ops"}."""
    images = torch.stack([d["image"] for d in inputs])
    fca = flop_analysis(_RawInference(model).eval(), (images,))
    total = float(fca.total())
    by = fca.by_module()
    out = {}
    for name in module_names:
        key = "model." + name
        if key in by:
            out[name] = float(by[key])
    return {
        "total": total,
        "by_module": out,
        "unsupported_ops": {k: int(v) for k, v in fca.unsupported_ops().items()},
    }


# ---------------------------------------------------------------------------- configs
def jsis_cfg(
    depth=50,
    size=(400, 400),
    branches=("semantic", "instance"),
    num_classes=133,
    num_things=80,
    post_nms_test=100,
    pre_nms_test=1000,
    detections=100,
    score_thresh=0.0,
    roi_batch=64,
    post_nms_train=256,
    norm="GN",
    config_file="configs/Base-JSIS-R50-C4.yaml",
    extra=(),
):
    """A JSIS-Net config based on ``configs/Base-JSIS-R50-C4.yaml`` with random weights on
    CPU: ``MODEL.WEIGHTS ""``, ``RESNETS.NORM`` = ``norm`` (random init: GN, nothing frozen),
    ``depth`` 18/34 sets ``RES2_OUT_CHANNELS`` 64. Proposals/ROIs as given (the C4 head runs
    res5 once per ROI: these counts set the cost). ``score_thresh`` 0 keeps the random
    detector's detections so that the mask path (res5 again per detection) always runs."""
    from jsis_d2.config import get_jsis_cfg

    cfg = get_jsis_cfg()
    cfg.merge_from_file(config_file)
    opts = [
        "MODEL.WEIGHTS",
        "",
        "MODEL.DEVICE",
        "cpu",
        "MODEL.BACKBONE.FREEZE_AT",
        0,
        "MODEL.RESNETS.DEPTH",
        depth,
        "MODEL.RESNETS.NORM",
        norm,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        num_classes,
        "MODEL.ROI_HEADS.NUM_CLASSES",
        num_things,
        "MODEL.RPN.PRE_NMS_TOPK_TEST",
        pre_nms_test,
        "MODEL.RPN.POST_NMS_TOPK_TEST",
        post_nms_test,
        "MODEL.RPN.POST_NMS_TOPK_TRAIN",
        post_nms_train,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        roi_batch,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        score_thresh,
        "TEST.DETECTIONS_PER_IMAGE",
        detections,
        "MODEL.JSIS.BRANCHES",
        list(branches),
        "INPUT.JSIS.FIXED_SIZE",
        list(size),
    ]
    if depth in (18, 34):
        opts += ["MODEL.RESNETS.RES2_OUT_CHANNELS", 64]
    cfg.merge_from_list(opts + list(extra))
    return cfg


def build_jsis(**cfg_kwargs):
    """(model, cfg) of :func:`jsis_cfg` (random weights, CPU)."""
    import jsis_d2  # noqa: F401  (registrations)

    from detectron2.modeling import build_model

    cfg = jsis_cfg(**cfg_kwargs)
    return build_model(cfg), cfg


# Top-level modules whose FLOPs are reported (those the model has).
FLOP_MODULES = (
    "backbone",
    "proposal_generator",
    "roi_heads",
    "roi_heads.res5",
    "roi_heads.box_predictor",
    "roi_heads.mask_head",
    "roi_heads.box_head",
    "sem_seg_head",
)


def _step(model, inputs, mode):
    """The measured call of :func:`measure`: returns what it saw ("detections", "proposals"
    in inference; "loss_keys" in training)."""
    from detectron2.utils.events import EventStorage

    if mode == "infer":
        model.eval()

        def step():
            with torch.no_grad():
                out = model(inputs)[0]
            info = {"detections": len(out["instances"]) if "instances" in out else 0}
            if "proposals" in out:
                info["proposals"] = len(out["proposals"])
            return info

        return step
    if mode != "train":
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    storage = EventStorage(0)

    def step():
        with storage:
            losses = model(inputs)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {"loss_keys": sorted(losses)}

    return step


def measure(
    build,
    build_kwargs,
    mode="infer",
    size=(400, 400),
    warmup=1,
    repeats=3,
    threads=2,
    flops=False,
    batch=1,
    seed=0,
):
    """One measurement, meant to run in its own process (:func:`run_isolated`).

    Args:
        build: module-level function ``build(**build_kwargs) -> (model, cfg)``.
        mode: "infer" (model.eval(), ``model(inputs)`` under no_grad, with postprocessing at
            the input size) or "train" (one SGD step: forward with losses, backward, step).
        size: input (H, W); ``batch`` images per call.
    Returns:
        dict: times (median/min, seconds per call), peak RSS of the measured phase (MiB),
        RSS before building the model and after, parameter count, FLOPs (inference only,
        with ``flops``), the numbers of proposals / detections seen, threads.
    """
    session = _Session(build, build_kwargs, mode, size, threads, batch, seed)
    load0 = load_average()
    timing = time_calls({"step": session.step}, repeats, warmup)["step"]
    return session.result(timing, warmup, [load0, load_average()], flops)


class _Session:
    """One model in one process, ready to be timed: built, its inputs made, its peak RSS reset
    (see :func:`measure` for the arguments)."""

    def __init__(self, build, build_kwargs, mode, size, threads, batch=1, seed=0):
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.mode, self.size, self.batch = mode, list(size), batch
        self.rss_start = rss_mb()
        self.model, cfg = build(**build_kwargs)
        h, w = size
        self.inputs = random_inputs(
            h,
            w,
            batch,
            train=(mode == "train"),
            seed=seed,
            num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            num_things=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        )
        self.step = _step(self.model, self.inputs, mode)
        self.rss_model = rss_mb()
        self.reset_ok = reset_peak_rss()

    def result(self, timing, warmup, load, flops=False):
        """measure()'s result dict from a :class:`Timing` of :attr:`step`."""
        peak = peak_rss_mb()
        result = {
            "mode": self.mode,
            "size": self.size,
            "batch": self.batch,
            "threads": torch.get_num_threads(),
            "warmup": warmup,
            "repeats": len(timing.wall),
            **timing.summary(),
            "peak_rss_mb": peak,
            "rss_before_build_mb": self.rss_start,
            "rss_after_build_mb": self.rss_model,
            "peak_above_imports_mb": None if self.rss_start is None else peak - self.rss_start,
            "peak_reset": self.reset_ok,
            "params_m": sum(p.numel() for p in self.model.parameters()) / 1e6,
            "load_average": load,
            **(timing.last or {}),
        }
        if flops and self.mode == "infer":
            with torch.no_grad():
                fl = count_flops(self.model, self.inputs, FLOP_MODULES)
            result["gflops"] = fl["total"] / 1e9 / self.batch
            result["gflops_by_module"] = {
                k: v / 1e9 / self.batch for k, v in fl["by_module"].items()
            }
            result["flops_unsupported_ops"] = fl["unsupported_ops"]
        return result


class _Side:
    """One side of :func:`measure_interleaved` in this process: a :class:`_Session`, warmed
    up, timed one call at a time."""

    def __init__(self, build, build_kwargs, mode, size, warmup, threads, batch, seed, flops):
        self.session = _Session(build, build_kwargs, mode, size, threads, batch, seed)
        self.warmup, self.flops = warmup, flops
        self.timing = time_calls({"step": self.session.step}, 0, warmup)["step"]
        self.load, self.started = [None, None], []

    def call(self) -> float:
        if self.load[0] is None:
            self.load[0] = load_average()
        self.started.append(time.time())  # wall clock: comparable across processes
        one = time_calls({"step": self.session.step}, 1, warmup=0)["step"]
        self.timing.wall += one.wall
        self.timing.last = one.last
        return one.wall[0]

    def finish(self) -> dict:
        self.load[1] = load_average()
        result = self.session.result(self.timing, self.warmup, self.load, self.flops)
        result["call_started"] = self.started
        return result


def _side_process(conn, factory, side_args):
    """A side (``factory(*side_args)``: an object with ``call() -> seconds`` and ``finish() ->
    dict``) in its own process: answers "call" until "finish"."""
    import traceback

    try:
        side = factory(*side_args)
        conn.send(("ready", None))
        while True:
            cmd = conn.recv()
            if cmd == "call":
                conn.send(("time", side.call()))
            elif cmd == "finish":
                conn.send(("result", side.finish()))
                return
            else:
                raise ValueError(f"unknown command {cmd!r}")
    except EOFError:  # the parent stopped (another side failed)
        return
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class _ProcessSide:
    """The parent's handle on a :func:`_side_process`: the same ``call`` / ``finish``."""

    def __init__(self, ctx, name, factory, side_args):
        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_side_process, args=(child, factory, side_args), daemon=True)
        self.proc.start()
        try:
            self._reply("ready")  # one side at a time: the builds do not overlap
        except BaseException:
            self.stop()  # its process reported an error and ends: wait for it
            raise

    def call(self) -> float:
        self.conn.send("call")
        return self._reply("time")

    def finish(self) -> dict:
        self.conn.send("finish")
        return self._reply("result")

    def stop(self):
        self.conn.close()  # a side still waiting for a command ends
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

    def _reply(self, expected):
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            raise RuntimeError(
                f"benchmark side {self.name!r}: its process ended without a reply"
            ) from None
        if kind == "error":
            raise RuntimeError(f"benchmark side {self.name!r} failed:\n{payload}")
        if kind != expected:
            raise RuntimeError(f"benchmark side {self.name!r}: expected {expected!r}, got {kind!r}")
        return payload


def measure_interleaved(
    sides,
    mode="infer",
    size=(400, 400),
    warmup=1,
    repeats=3,
    threads=2,
    flops=(),
    batch=1,
    seed=0,
    isolated=True,
):
    """Time several models against each other, interleaved, each in its own process.

    Every side gets a fresh ``spawn`` process that builds its model (as :func:`measure`) and
    runs ``warmup`` calls; then the parent runs ``repeats`` rounds in which it asks every side,
    in the order of ``sides``, for one timed call (A, B, C, A, B, C, ...). A process waits
    while another side runs, so each peak RSS (VmHWM, reset after building) is its own side's,
    while load from other processes on the machine hits all sides alike.

    Args:
        sides: name -> (build, build_kwargs), as :func:`measure` takes them.
        flops: names of the sides whose FLOPs are counted (inference only).
        isolated: False builds every side in this process (same order of calls; for tests:
            the peaks are then the process's, not the side's).
    Returns:
        name -> :func:`measure`'s result dict, plus ``"call_started"``: the wall-clock start
        of each timed call (``time.time()``), which shows the interleaving.
    Raises:
        RuntimeError with a side's traceback when it fails (the other sides are stopped).
    """
    return interleave(
        {
            name: (_Side, (build, kw, mode, size, warmup, threads, batch, seed, name in flops))
            for name, (build, kw) in sides.items()
        },
        repeats,
        isolated,
    )


def interleave(sides, repeats, isolated=True):
    """The loop of :func:`measure_interleaved`, for any kind of side.

    Args:
        sides: name -> (factory, args): ``factory(*args)`` (importable, module level) builds
            the side, ready to be timed: an object with ``call() -> seconds`` (one timed call)
            and ``finish() -> dict`` (its result).
        repeats: rounds; each calls every side once, in the order of ``sides``.
        isolated: each side in its own ``spawn`` process (else all in this one).
    Returns:
        name -> the side's ``finish()``.
    """
    ctx = multiprocessing.get_context("spawn")
    handles = {}
    try:
        for name, (factory, args) in sides.items():
            handles[name] = _ProcessSide(ctx, name, factory, args) if isolated else factory(*args)
        for _ in range(repeats):
            for h in handles.values():
                h.call()
        return {name: h.finish() for name, h in handles.items()}
    finally:
        for h in handles.values():
            if isinstance(h, _ProcessSide):
                h.stop()
