"""jsis_d2.data.panoptic_png: the panoptic PNG codec (id space, modes, errors)."""

import numpy as np
import pytest
from PIL import Image

from jsis_d2.data.panoptic_png import (
    MissingPanopticPNGError,
    PanopticPNGError,
    id2rgb,
    read_panoptic_png,
    rgb2id,
    write_panoptic_png,
)


def test_rgb2id_id2rgb_roundtrip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 16777215, 70000]])
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    np.testing.assert_array_equal(rgb2id(rgb), ids)
    np.testing.assert_array_equal(id2rgb(ids), rgb)
    with pytest.raises(ValueError, match="RGB"):
        rgb2id(ids.astype(np.uint8))


def test_read_panoptic_png_modes(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1 << 24, size=(7, 9))
    path = str(tmp_path / "a.png")
    write_panoptic_png(path, ids)
    out = read_panoptic_png(path)
    assert out.shape == (7, 9) and (out == ids).all()
    assert (rgb2id(np.asarray(Image.open(path))) == ids).all()  # a plain RGB PNG
    rgba = Image.open(path).convert("RGBA")
    rgba.putalpha(17)
    rgba.save(str(tmp_path / "rgba.png"))
    assert (read_panoptic_png(str(tmp_path / "rgba.png")) == ids).all()  # alpha ignored
    palette = np.array([0, 5, 70000])
    few = palette[[[0, 1, 2], [2, 1, 0]]]
    p = Image.fromarray(np.array([[0, 1, 2], [2, 1, 0]], np.uint8), mode="P")
    p.putpalette(id2rgb(palette[None]).reshape(-1).tolist())
    p.save(str(tmp_path / "p.png"))
    assert Image.open(str(tmp_path / "p.png")).mode == "P"
    assert (read_panoptic_png(str(tmp_path / "p.png")) == few).all()  # palette -> RGB
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(str(tmp_path / "gray.png"))
    with pytest.raises(PanopticPNGError, match="gray.png.*mode 'L'"):
        read_panoptic_png(str(tmp_path / "gray.png"))


def test_read_errors_are_one_line_naming_the_file(tmp_path):
    missing = str(tmp_path / "missing.png")
    with pytest.raises(MissingPanopticPNGError) as e:
        read_panoptic_png(missing, "image 3")
    assert isinstance(e.value, FileNotFoundError)
    assert str(e.value) == f"image 3: panoptic PNG not found: {missing}"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(PanopticPNGError, match="cannot read panoptic PNG .*bad.png") as e:
        read_panoptic_png(str(bad))
    assert "\n" not in str(e.value)


def test_write_panoptic_png_checks_ids(tmp_path):
    path = str(tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"x\.png.*\[H, W\]"):
        write_panoptic_png(path, np.zeros((2, 2, 3), np.int64))
    with pytest.raises(ValueError, match=r"x\.png.*\[0, 2\*\*24\)"):
        write_panoptic_png(path, np.array([[0, 1 << 24]]))
    with pytest.raises(ValueError, match=r"x\.png.*\[0, 2\*\*24\)"):
        write_panoptic_png(path, np.array([[-1, 0]]))
