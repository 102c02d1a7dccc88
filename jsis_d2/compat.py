"""Shims that let detectron2 v0.6 (the "pb1" sdist) run on current NumPy, Pillow and Python,
without its compiled ops. Imported by ``jsis_d2/__init__.py`` before anything touches
detectron2.

Each shim is applied only where the INSTALLED detectron2 needs it, judged from its own source
files (read, not imported), so with official detectron2 (main branch, compiled ops) importing
this module changes nothing; ``applied`` lists what was changed:

- ``np.int``, ``np.float``, ``np.bool``, ``np.str`` (removed in NumPy 1.24, still used by 0.6)
  are restored as the builtins they aliased; ``Image.LINEAR`` (removed in Pillow 10, a default
  argument in 0.6's ``data/transforms/transform.py``) as ``Image.BILINEAR``.
- ``detectron2._C`` (C++/CUDA ops, absent from the pb1 sdist) gets a placeholder module so that
  ``import detectron2.layers`` works; JSIS-Net uses none of those ops (ROIAlign and NMS come
  from torchvision). Any op accessed on it raises :class:`MissingCompiledOpError` naming the op
  and how to get the full build.
- 0.6 ``MapDataset`` retries a sample whose mapper returned None (what
  ``DATALOADER.SKIP_BAD_SAMPLES`` relies on) with ``random.sample(<a set>)``, a TypeError since
  Python 3.11 (d2go issue #655): MapDataset gets an RNG that accepts sets.
- The warning that ``torch.jit.script`` is deprecated, raised each time 0.6 applies it at
  import, is silenced (it says nothing about the user's code).
"""

import functools
import importlib.machinery
import importlib.util
import inspect
import logging
import os
import random
import re
import sys
import types
import warnings

import numpy as np
from PIL import Image

__all__ = ["MissingCompiledOpError", "PLACEHOLDER_C_MODULE", "apply", "applied"]

logger = logging.getLogger(__name__)

# Names removed from NumPy 1.24 that detectron2 0.6 uses, and what they always meant.
_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "str": str}
# detectron2 files (relative to its package) that refer to the removed names in 0.6.
_NUMPY_ALIAS_USERS = (
    "data/build.py",
    "data/datasets/pascal_voc.py",
    "evaluation/pascal_voc_evaluation.py",
    "evaluation/sem_seg_evaluation.py",
    "structures/masks.py",
    "utils/video_visualizer.py",
    "utils/visualizer.py",
)
_PILLOW_LINEAR_USERS = ("data/transforms/transform.py",)

PLACEHOLDER_C_MODULE = "detectron2._C"

#: What this module changed in the running process (for logs and tests).
applied = []


class MissingCompiledOpError(RuntimeError):
    """Raised when code asks for a detectron2 C++/CUDA op that this install lacks."""


class _MissingCModule(types.ModuleType):
    """Stands in for ``detectron2._C`` when detectron2 was installed without compiled ops."""

    _jsis_placeholder = True

    # ``detectron2.utils.collect_env`` queries these three; answer truthfully.
    @staticmethod
    def get_compiler_version():
        return "not built (detectron2 installed without compiled ops; jsis_d2 placeholder)"

    @staticmethod
    def get_cuda_version():
        return "not built"

    @staticmethod
    def has_cuda():
        return False

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise MissingCompiledOpError(
            f"detectron2._C.{name} is not available: this detectron2 was installed without its "
            "compiled C++/CUDA ops (the pb1-detectron2 sdist does not ship them). JSIS-Net does "
            "not need them; if you do, install official detectron2 built from source "
            "(see the project's Dockerfile, or "
            "`pip install 'git+https://github.com/facebookresearch/detectron2.git'`)."
        )


@functools.lru_cache(maxsize=None)
def _detectron2_sources(relpaths):
    """The text of the installed detectron2's files ``relpaths`` (missing files: skipped),
    found without importing detectron2 (its submodules are what need the shims)."""
    try:
        spec = importlib.util.find_spec("detectron2")
    except (ImportError, ValueError):
        spec = None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    texts = []
    for root in roots:
        for rel in relpaths:
            try:
                with open(os.path.join(root, rel), encoding="utf-8") as f:
                    texts.append(f.read())
            except OSError:
                pass
    return "\n".join(texts)


def _detectron2_refers_to(relpaths, dotted_name):
    """Whether those detectron2 files use ``dotted_name`` (e.g. ``np.int``) as a whole name."""
    pattern = re.escape(dotted_name) + r"(?![A-Za-z0-9_])"
    return re.search(pattern, _detectron2_sources(relpaths)) is not None


def _restore_numpy_aliases():
    for name, value in _NUMPY_ALIASES.items():
        if name in np.__dict__ or not _detectron2_refers_to(_NUMPY_ALIAS_USERS, f"np.{name}"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                getattr(np, name)
        except AttributeError:
            setattr(np, name, value)
            applied.append(f"numpy.{name}")


def _restore_pillow_names():
    if not hasattr(Image, "LINEAR") and _detectron2_refers_to(_PILLOW_LINEAR_USERS, "Image.LINEAR"):
        Image.LINEAR = Image.BILINEAR
        applied.append("PIL.Image.LINEAR")


def _c_extension_present():
    if PLACEHOLDER_C_MODULE in sys.modules:
        return True
    try:
        return importlib.util.find_spec(PLACEHOLDER_C_MODULE) is not None
    except ImportError:  # detectron2 itself is missing: nothing to shim
        return True


def _register_missing_c_placeholder():
    if _c_extension_present():
        return
    module = _MissingCModule(PLACEHOLDER_C_MODULE)
    module.__spec__ = importlib.machinery.ModuleSpec(PLACEHOLDER_C_MODULE, loader=None)
    sys.modules[PLACEHOLDER_C_MODULE] = module
    import detectron2

    detectron2._C = module
    applied.append(PLACEHOLDER_C_MODULE)


class _SetSamplingRandom(random.Random):
    """``random.Random`` whose ``sample`` also accepts a set (as before Python 3.11)."""

    def sample(self, population, k, **kwargs):
        if isinstance(population, (set, frozenset)):
            population = sorted(population)
        return super().sample(population, k, **kwargs)


def _fix_map_dataset_retry():
    from detectron2.data import common as d2_common

    cls = d2_common.MapDataset
    if sys.version_info < (3, 11) or getattr(cls, "_jsis_retry_fixed", False):
        return
    try:
        buggy = "self._rng.sample(self._fallback_candidates" in inspect.getsource(cls.__getitem__)
    except (OSError, TypeError):
        buggy = False
    if not buggy:
        return
    original_init = cls.__init__

    def __init__(self, dataset, map_func):
        original_init(self, dataset, map_func)
        self._rng = _SetSamplingRandom(42)

    cls.__init__ = __init__
    cls._jsis_retry_fixed = True
    applied.append("detectron2.data.common.MapDataset retry")


def apply():
    """Apply every missing shim (idempotent). Returns the list of what was changed."""
    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning
    )
    _restore_numpy_aliases()
    _restore_pillow_names()
    _register_missing_c_placeholder()
    _fix_map_dataset_retry()  # imports detectron2.data: after the names it needs exist
    if applied:
        logger.debug("jsis_d2.compat applied: %s", ", ".join(applied))
    return list(applied)


apply()
