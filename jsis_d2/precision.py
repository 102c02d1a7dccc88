"""Numeric precision of training and inference: config keys -> dtype, device support, autocast.

Keys (declared in :mod:`jsis_d2.config`):

* training: Detectron2's ``SOLVER.AMP.ENABLED`` plus ``SOLVER.AMP.PRECISION`` ("float16", the
  default, as Detectron2's AMPTrainer; or "bfloat16");
* inference: ``TEST.PRECISION`` ("float32", the default, "bfloat16" or "float16");
* ``MODEL.JSIS.CHANNELS_LAST``: weights and input images in channels_last memory format.

Support: CUDA has float16, and bfloat16 where ``torch.cuda.is_bf16_supported()``. The CPU has
no float16 autocast worth using (no float16 matrix units here; refused), and bfloat16 only where
oneDNN reports bf16 support (AVX512-BF16 or AMX-BF16, see :func:`cpu_bf16_support`). Anything
else is a :class:`~jsis_d2.config.ConfigError` naming the key, raised when the model is built.

Autocast runs matmuls/convolutions in the low precision; the model casts its outputs back to
float32 at the boundaries (losses, logits, scores, mask probabilities), so the losses, the
panoptic merge and the evaluator always see float32. At inference the convolution and linear
weights are cast once and reused (:class:`LowPrecisionWeights`) instead of once per call.
:class:`PrecisionPolicy` puts these together for a model: it holds the dtypes and the
cast-once weights, and gives the model its autocast region, its module calls and its float32
boundary, so the model's code only names the steps.
"""

import contextlib
import functools
import logging

import torch
from torch import nn

from .config import ConfigError

__all__ = [
    "DTYPES",
    "parse_dtype",
    "cpu_bf16_support",
    "dtype_supported",
    "check_dtype",
    "autocast",
    "training_dtype",
    "inference_dtype",
    "LowPrecisionWeights",
    "float32_outputs",
    "PrecisionPolicy",
]

logger = logging.getLogger(__name__)

#: Config spelling -> torch dtype.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name, key: str, allowed=tuple(DTYPES)) -> torch.dtype:
    """``name`` (a config value) -> torch dtype; ConfigError naming ``key`` if unknown."""
    if name not in allowed:
        raise ConfigError(f"{key}={name!r} is not one of {', '.join(allowed)}")
    return DTYPES[name]


def cpuinfo_field(name: str):
    """The value of the first ``name`` line of /proc/cpuinfo (e.g. "flags", "model name"), or
    None where it is unreadable or absent."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_flags():
    return set((cpuinfo_field("flags") or "").split())


@functools.lru_cache(maxsize=None)
def cpu_bf16_support() -> dict:
    """What this CPU offers for bfloat16, detected (never assumed).

    Returns {"supported": bool (oneDNN's own check, the one that decides), "avx512_bf16",
    "amx_bf16": bool (from /proc/cpuinfo; False where it is unreadable), "capability": torch's
    CPU capability string (e.g. "AVX512")}."""
    flags = _cpu_flags()
    try:
        mkldnn = bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        mkldnn = False
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        cap = None
    return {
        "supported": mkldnn,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "capability": cap,
    }


def dtype_supported(dtype: torch.dtype, device) -> bool:
    """Whether ``dtype`` compute is available on ``device`` (str or torch.device)."""
    kind = torch.device(device).type
    if dtype == torch.float32:
        return True
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False
        return dtype == torch.float16 or torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return dtype == torch.bfloat16 and cpu_bf16_support()["supported"]
    return False


def check_dtype(dtype: torch.dtype, device, key: str) -> None:
    """ConfigError (one line, naming ``key``) when ``device`` lacks ``dtype``."""
    if dtype_supported(dtype, device):
        return
    name = next(k for k, v in DTYPES.items() if v == dtype)
    kind = torch.device(device).type
    if kind == "cpu" and dtype == torch.float16:
        why = "CPU autocast here is bfloat16 only; use bfloat16 (where supported) or float32"
    elif kind == "cpu":
        s = cpu_bf16_support()
        why = (
            f"this CPU has no bfloat16 support (oneDNN bf16: no, avx512_bf16: "
            f"{'yes' if s['avx512_bf16'] else 'no'}, amx_bf16: "
            f"{'yes' if s['amx_bf16'] else 'no'}); use float32"
        )
    elif kind == "cuda" and not torch.cuda.is_available():
        why = "CUDA is not available"
    else:
        why = f"{device} does not support it"
    raise ConfigError(f"{key}={name!r} on MODEL.DEVICE={str(device)!r}: {why}")


def autocast(device, dtype: torch.dtype):
    """``torch.autocast`` on ``device``'s type with ``dtype``; a no-op context for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def training_dtype(cfg) -> torch.dtype:
    """Training compute dtype: SOLVER.AMP.PRECISION when SOLVER.AMP.ENABLED, else float32.
    Checked against MODEL.DEVICE (ConfigError)."""
    if not cfg.SOLVER.AMP.ENABLED:
        return torch.float32
    dtype = parse_dtype(
        cfg.SOLVER.AMP.PRECISION, "SOLVER.AMP.PRECISION", allowed=("float16", "bfloat16")
    )
    check_dtype(dtype, cfg.MODEL.DEVICE, "SOLVER.AMP.PRECISION")
    return dtype


def inference_dtype(cfg) -> torch.dtype:
    """Inference compute dtype: TEST.PRECISION, checked against MODEL.DEVICE (ConfigError)."""
    dtype = parse_dtype(cfg.TEST.PRECISION, "TEST.PRECISION")
    check_dtype(dtype, cfg.MODEL.DEVICE, "TEST.PRECISION")
    return dtype


#: Modules whose weights autocast casts to the low precision (the ops it runs in it).
_LOW_PRECISION_MODULES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


class LowPrecisionWeights:
    """Low-precision copies of a module's convolution and linear weights, made once and reused
    by every inference call while the weights are unchanged.

    Autocast casts each float32 weight of a convolution/linear op at every call (its cast cache
    lives for one autocast region); at inference the weights do not change between calls, so
    those casts are repeated work (on the CPU about a tenth of a bfloat16 R50-C4 inference).
    ``for_module(m)`` returns {parameter name in ``m``: copy in ``dtype``} for
    ``torch.func.functional_call(m, ...)``. The copies are remade when any of those parameters
    changed in place (its version counter, e.g. an optimizer step or ``load_state_dict``) or
    was replaced (a new Parameter, or new storage as after ``.to(device)``); :meth:`clear`
    drops them (the model calls it when it switches to training). Autocast's own cast rounds
    the same way, so the outputs are bit-identical to casting at every call. Normalization
    weights stay float32.
    """

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self._copies = {}  # id(module) -> (key, {name: low-precision tensor})

    def clear(self) -> None:
        self._copies.clear()

    def for_module(self, module: nn.Module) -> dict:
        params = [
            (f"{mname}.{pname}" if mname else pname, p)
            for mname, m in module.named_modules()
            if isinstance(m, _LOW_PRECISION_MODULES)
            for pname, p in m.named_parameters(recurse=False)
        ]
        key = tuple((id(p), p.data_ptr(), p._version) for _, p in params)
        cached = self._copies.get(id(module))
        if cached is None or cached[0] != key:
            with torch.no_grad():
                copies = {n: p.detach().to(self.dtype) for n, p in params}
            cached = self._copies[id(module)] = (key, copies)
        return cached[1]


def float32_outputs(results):
    """Low-precision floating tensors (and Instances fields, Boxes) in ``results`` (a tensor
    or a list of Instances/None) -> float32, in place for Instances; other dtypes unchanged.
    Returns ``results`` (the new tensor for a tensor)."""

    def f(t):
        return t.float() if torch.is_floating_point(t) and t.dtype != torch.float32 else t

    if isinstance(results, torch.Tensor):
        return f(results)
    for r in results:
        if r is None:
            continue
        for k, v in r.get_fields().items():
            if isinstance(v, torch.Tensor):
                r.set(k, f(v))
            elif hasattr(v, "tensor") and isinstance(v.tensor, torch.Tensor):
                v.tensor = f(v.tensor)
    return results


class PrecisionPolicy(nn.Module):
    """How a model computes: autocast dtypes, memory format, cast-once inference weights.

    A model holds one as a child module (no parameters or buffers, so ``state_dict`` is
    unchanged) and calls it at a few places:

    * ``with policy.autocast(device):`` around the forward pass: ``train_dtype`` in training,
      ``test_dtype`` at inference (float32: no autocast);
    * ``policy.run(module, *args, **kwargs)``: ``module(*args, **kwargs)``; at low-precision
      inference with its convolution/linear weights replaced by the cast-once copies
      (:class:`LowPrecisionWeights`, through ``torch.func.functional_call``), bit-identical to
      autocast's own per-call casts;
    * ``policy.features(backbone, x)``: ``run(backbone, x)`` with the images ``x`` (float
      [B, 3, H, W]) in channels_last format when ``channels_last``;
    * ``policy.float32(*results)``: each result through :func:`float32_outputs` at
      low-precision inference (the boundary: everything after is float32), unchanged otherwise.

    :meth:`attach` puts the model's 4-D weights in channels_last format (when set).
    ``model.train()`` reaches this module too and drops the cast copies (the weights will
    change). ``weights`` is the :class:`LowPrecisionWeights` (None: float32 inference, or set
    to None to cast at every call as plain autocast does).
    """

    def __init__(
        self,
        train_dtype: torch.dtype = torch.float32,
        test_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ):
        super().__init__()
        self.train_dtype = train_dtype
        self.test_dtype = test_dtype
        self.channels_last = channels_last
        self.weights = None if test_dtype == torch.float32 else LowPrecisionWeights(test_dtype)

    def extra_repr(self) -> str:
        return (
            f"train_dtype={self.train_dtype}, test_dtype={self.test_dtype}, "
            f"channels_last={self.channels_last}"
        )

    def attach(self, model: nn.Module) -> None:
        """Prepare ``model``'s weights: channels_last format for 4-D weights (when set)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # 4-D weights only

    def train(self, mode: bool = True):
        if mode and self.weights is not None:
            self.weights.clear()  # the weights will change
        return super().train(mode)

    def autocast(self, device):
        """The autocast region of a forward pass on ``device`` (see :func:`autocast`)."""
        return autocast(device, self.train_dtype if self.training else self.test_dtype)

    def run(self, module: nn.Module, *args, **kwargs):
        """``module(*args, **kwargs)``, with the cast-once weights at low-precision inference."""
        if self.training or self.weights is None:
            return module(*args, **kwargs)
        return torch.func.functional_call(module, self.weights.for_module(module), args, kwargs)

    def features(self, backbone: nn.Module, x: torch.Tensor):
        """``backbone``'s features of the images ``x`` (float [B, 3, H, W]) through :meth:`run`,
        ``x`` in channels_last format when set."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.run(backbone, x)

    def float32(self, *results):
        """``results`` (tensors or lists of Instances/None) in float32 after low-precision
        inference (:func:`float32_outputs`); as they are otherwise. Returns a tuple."""
        if self.training or self.test_dtype == torch.float32:
            return results
        return tuple(float32_outputs(r) for r in results)
