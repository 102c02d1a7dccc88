"""16-bit and other high-bit-depth images: scaled to 8 bits by the type's range, or refused."""

import numpy as np
import pytest
import torch
from PIL import Image

from jsis_d2.data.dataset_mapper import BadSampleError, JSISDatasetMapper
from jsis_d2.data.image_io import UnsupportedImageError, read_image, to_8bit

H, W = 12, 16


def _gradient16():
    """uint16 [H, W] from 0 to 65535 (a dark half and a bright half)."""
    return np.linspace(0, 65535, H * W).round().astype(np.uint16).reshape(H, W)


def _expected_8bit(values):
    return np.round(values.astype(np.float64) / 257.0).astype(np.uint8)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = _gradient16()
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)  # a real 16-bit grayscale PNG
    assert Image.open(path).mode == "I;16"
    image = read_image(str(path), format="BGR")
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    assert np.array_equal(image[:, :, 0], _expected_8bit(values))
    assert (image == 255).mean() < 0.05  # Detectron2's read_image: > 0.99 white
    assert np.array_equal(image[:, :, 0], image[:, :, 2])


def test_other_16bit_modes_and_32bit_int(tmp_path):
    values = _gradient16()
    big_endian = Image.frombytes("I;16B", (W, H), values.astype(">u2").tobytes())
    assert np.array_equal(np.asarray(to_8bit(big_endian)), _expected_8bit(values))
    path = tmp_path / "int32.tif"
    Image.fromarray(values.astype(np.int32)).save(path)
    assert Image.open(path).mode == "I"
    assert np.array_equal(read_image(str(path), "RGB")[:, :, 1], _expected_8bit(values))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((H, W), 0.5, np.float32), "32-bit float"),
        (np.full((H, W), 70000, np.int32), "outside the 16-bit range"),
    ],
)
def test_ambiguous_high_bit_images_are_refused(tmp_path, array, message):
    path = tmp_path / "odd.tif"
    Image.fromarray(array).save(path)
    with pytest.raises(UnsupportedImageError, match=message) as e:
        read_image(str(path), "BGR")
    assert str(path) in str(e.value)


def test_mapper_reads_16bit_images(tmp_path):
    values = _gradient16()
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    mapper = JSISDatasetMapper(False, augmentations=[], image_format="RGB")
    out = mapper({"file_name": str(path), "image_id": 0, "height": H, "width": W})
    expected = torch.from_numpy(_expected_8bit(values))
    assert all(torch.equal(out["image"][c], expected) for c in range(3))
    Image.fromarray(values.astype(np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(BadSampleError, match="f.tif"):
        mapper({"file_name": str(tmp_path / "f.tif"), "image_id": 1, "height": H, "width": W})


def test_image_over_the_pixel_limit_is_an_unsupported_image(tmp_path, monkeypatch):
    """Pillow's DecompressionBombError is not an OSError: read_image turns it into the
    ValueError the mapper (BadSampleError, skippable) and demo.py (skipped) handle."""
    from PIL import Image

    from jsis_d2.data.image_io import UnsupportedImageError, read_image

    path = tmp_path / "big.png"
    Image.new("RGB", (48, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UnsupportedImageError, match=f"image {path} is over Pillow's pixel limit"):
        read_image(str(path))
    from jsis_d2.data.dataset_mapper import _read_image

    with pytest.raises(BadSampleError, match="over Pillow's pixel limit"):  # SKIP_BAD_SAMPLES
        _read_image(str(path), "RGB")
