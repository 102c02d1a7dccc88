"""jsis_d2.compat: the shims detectron2 0.6 needs, applied only when missing."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from jsis_d2 import compat


def _run(code):
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _stack():
    """The installed detectron2: "pb1" (the 0.6 sdist) or "official" (built from source)."""
    import importlib.metadata as md

    try:
        md.version("pb1-detectron2")
        return "pb1"
    except md.PackageNotFoundError:
        return "official"


#: What jsis_d2.compat must change on each stack, and nothing more.
SHIMS_BY_STACK = {
    "pb1": {
        "numpy.int",
        "numpy.float",
        "numpy.bool",
        "numpy.str",
        "PIL.Image.LINEAR",
        "detectron2._C",
        "detectron2.data.common.MapDataset retry",
    },
    "official": set(),
}


def test_active_shims_are_exactly_those_the_installed_detectron2_needs():
    assert set(compat.applied) == SHIMS_BY_STACK[_stack()], _stack()


def test_detectron2_modules_that_need_shims_import():
    # Each of these crashed at import (or at first use) on 0.6 before the shims.
    import detectron2.data.transforms  # Image.LINEAR default argument
    import detectron2.layers  # `from detectron2 import _C`
    import detectron2.modeling  # noqa: F401

    if _stack() == "official":  # nothing restored: official detectron2 does not use them
        assert not hasattr(Image, "LINEAR") and "int" not in np.__dict__
        return
    assert Image.LINEAR == Image.BILINEAR
    assert np.zeros(2).astype(np.bool).dtype == np.bool_
    assert np.array([1.5], dtype=np.float).dtype == np.float64
    assert np.array([1], dtype=np.int).dtype.kind == "i"


def test_placeholder_op_raises_naming_op_and_fix():
    from detectron2 import _C

    if not getattr(_C, "_jsis_placeholder", False):
        pytest.skip("official detectron2 with compiled ops: the placeholder is not used")
    with pytest.raises(compat.MissingCompiledOpError) as e:
        _C.box_iou_rotated  # noqa: B018
    msg = str(e.value)
    assert "detectron2._C.box_iou_rotated" in msg and "Dockerfile" in msg
    # The rotated-box op goes through the placeholder too (from a real detectron2 module).
    import torch

    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    with pytest.raises(compat.MissingCompiledOpError, match="box_iou_rotated"):
        pairwise_iou_rotated(torch.zeros(1, 5), torch.zeros(1, 5))


def test_collect_env_works_with_placeholder():
    from detectron2.utils.collect_env import collect_env_info

    info = collect_env_info()
    assert "detectron2" in info


def test_apply_is_idempotent():
    before = list(compat.applied)
    assert compat.apply() == before


def test_noop_when_names_and_compiled_ops_exist():
    """With an official build (real _C, NumPy/Pillow names present) nothing is replaced."""
    out = _run(
        """
        import sys, types
        import numpy as np
        from PIL import Image
        real_c = types.ModuleType("detectron2._C")      # stands for the compiled extension
        sys.modules["detectron2._C"] = real_c
        sentinel_int, sentinel_linear = object(), object()
        np.int = sentinel_int
        Image.LINEAR = sentinel_linear
        import jsis_d2.compat as compat
        assert sys.modules["detectron2._C"] is real_c
        assert np.int is sentinel_int and Image.LINEAR is sentinel_linear
        assert "detectron2._C" not in compat.applied and "numpy.int" not in compat.applied
        assert "PIL.Image.LINEAR" not in compat.applied
        print("ok", compat.applied)
        """
    )
    assert out.startswith("ok")


def test_placeholder_registered_only_when_extension_missing():
    out = _run(
        """
        import importlib.util
        import detectron2
        spec_before = importlib.util.find_spec("detectron2._C")
        import jsis_d2.compat as compat
        registered = "detectron2._C" in compat.applied
        print("missing" if spec_before is None else "present", registered)
        """
    )
    state, registered = out.split()
    assert (state == "missing") == (registered == "True")
