"""jsis_runtime, the torch-free runtime: sidecar checks, preprocessing bit-identical to
Detectron2's, image decoding identical to jsis_d2's, the ONNX model on a stand-in graph, the
COCO panoptic writer and the image lists."""

import json
import os

import numpy as np
import pytest
from _onnx_standin import (
    CATEGORIES,
    expected_prediction,
    make_image,
    sidecar_dict,
    write_standin_model,
)
from PIL import Image

from jsis_d2.data.augmentations import FixedSizeResize
from jsis_d2.data.image_io import read_image
from jsis_d2.data.panoptic_png import read_panoptic_png
from jsis_runtime.coco_panoptic import PanopticResultsWriter, id2rgb, image_record
from jsis_runtime.errors import RuntimeUsageError, SidecarError, UnreadableImageError
from jsis_runtime.image_io import read_image_rgb
from jsis_runtime.inputs import items_from_image_info, items_from_inputs, png_names
from jsis_runtime.onnx_model import OnnxPanopticModel
from jsis_runtime.preprocess import network_input
from jsis_runtime.sidecar import check_sidecar, load_sidecar

from detectron2.data.transforms import ResizeTransform

# ----------------------------------------------------------------------------- sidecar


def test_sidecar_loads_and_maps_contiguous_to_dataset_ids(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(sidecar_dict(16, 24)))
    sc = load_sidecar(str(tmp_path))
    assert sc.input_size == (16, 24) and sc.input_format == "BGR"
    assert sc.dataset_ids == [1, 2, 3, 4, 11, 12, 13, 14, 15]
    assert sc.is_thing == [True] * 4 + [False] * 5
    assert sc.model_path == os.path.join(str(tmp_path), "model.onnx")


def _broken(path_keys, value):
    d = sidecar_dict(16, 24)
    target = d
    for k in path_keys[:-1]:
        target = target[k]
    if value is KeyError:
        del target[path_keys[-1]]
    else:
        target[path_keys[-1]] = value
    return d


@pytest.mark.parametrize(
    "keys, value, message",
    [
        (("input", "height"), KeyError, "missing key 'input.height'"),
        (("input", "width"), "24", "'input.width' has the wrong type"),
        (("input", "format"), "YUV", "'input.format' must be one of"),
        (("format",), "jsis_d2.export/0", "key 'format' is 'jsis_d2.export/0'"),
        (("model_file",), "../model.onnx", "'model_file' must be a file name"),
        (("categories",), [], "'categories' is empty"),
        (("categories", 0, "id"), True, "'categories[0].id' has the wrong type"),
        (("categories", 1, "id"), 1, "duplicate id(s) [1]"),
        (("outputs",), ["panoptic_seg"], "key 'outputs' must be"),
    ],
)
def test_sidecar_errors_name_the_file_and_key(keys, value, message):
    with pytest.raises(SidecarError) as e:
        check_sidecar(_broken(keys, value), "/x/model.json")
    assert message in str(e.value) and str(e.value).startswith("/x/model.json: ")
    assert "\n" not in str(e.value)


def test_missing_or_unparsable_sidecar(tmp_path):
    with pytest.raises(SidecarError, match="model.json: no such file"):
        load_sidecar(str(tmp_path))
    (tmp_path / "model.json").write_text("{nope")
    with pytest.raises(SidecarError, match="cannot read it as JSON"):
        load_sidecar(str(tmp_path))


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "src, dst", [((37, 53), (64, 64)), ((480, 640), (400, 400)), ((5, 7), (5, 7))]
)
def test_resize_is_bit_identical_to_detectron2(src, dst):
    """network_input == what JSISPredictor feeds the model: FixedSizeResize's transform (a
    Detectron2 ResizeTransform, Pillow bilinear) on the BGR image."""
    rng = np.random.default_rng(sum(src))
    rgb = rng.integers(0, 256, size=(*src, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    d2 = FixedSizeResize(dst).get_transform(bgr).apply_image(bgr)
    if src != dst:
        plain = ResizeTransform(src[0], src[1], dst[0], dst[1]).apply_image(bgr)
        assert np.array_equal(plain, d2)
    ours = network_input(rgb, dst, "BGR")
    assert ours.dtype == np.uint8 and ours.flags["C_CONTIGUOUS"]
    assert np.array_equal(ours, d2)
    assert np.array_equal(network_input(rgb, dst, "RGB"), d2[:, :, ::-1])


def test_network_input_rejects_bad_images():
    with pytest.raises(ValueError, match=r"RGB image \[H, W, 3\]"):
        network_input(np.zeros((4, 4), np.uint8), (8, 8), "BGR")
    with pytest.raises(ValueError, match="uint8"):
        network_input(np.zeros((4, 4, 3), np.float32), (8, 8), "BGR")


# ----------------------------------------------------------------------------- image decoding


def _exif_rotated_jpeg(path):
    img = Image.fromarray(make_image(20, 30, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 270 to display upright
    img.save(path, exif=exif, quality=95)


@pytest.mark.parametrize("kind", ["rgb_png", "gray", "gray16", "palette", "rgba", "exif_jpeg"])
def test_read_image_rgb_equals_jsis_d2_reader(tmp_path, kind):
    path = str(tmp_path / f"{kind}.{'jpg' if 'jpeg' in kind else 'png'}")
    rgb = make_image(20, 30, 1)
    if kind == "rgb_png":
        Image.fromarray(rgb).save(path)
    elif kind == "gray":
        Image.fromarray(rgb[:, :, 0]).save(path)
    elif kind == "gray16":
        Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 250).save(path)
    elif kind == "palette":
        Image.fromarray(rgb).convert("P").save(path)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])).save(path)
    else:
        _exif_rotated_jpeg(path)
    ours = read_image_rgb(path)
    assert ours.dtype == np.uint8 and ours.shape[2] == 3
    assert np.array_equal(ours, read_image(path, format="RGB"))
    if kind == "exif_jpeg":
        assert ours.shape[:2] == (30, 20)  # turned upright


def test_unreadable_images_raise_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    for path in (str(bad), str(tmp_path / "missing.png")):
        with pytest.raises(UnreadableImageError) as e:
            read_image_rgb(path)
        assert path in str(e.value) and "\n" not in str(e.value)
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(UnreadableImageError, match="float pixels"):
        read_image_rgb(str(tmp_path / "f.tif"))


# ----------------------------------------------------------------------------- ONNX model


@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_onnx_model_on_the_standin_graph(tmp_path, fmt):
    """Resize, channel order, orig_size and the contiguous -> dataset id mapping."""
    model = OnnxPanopticModel(write_standin_model(tmp_path / "m", 16, 24, fmt), num_threads=1)
    for h, w, seed in ((32, 48, 0), (48, 96, 1), (16, 24, 2)):
        image = make_image(h, w, seed)
        pan, info = model.predict(image)
        want_pan, want_info = expected_prediction(image, 16, 24, fmt)
        assert pan.dtype == np.int32 and np.array_equal(pan, want_pan)
        assert info == want_info
    # the other channel order gives another map on these images (the test can tell)
    other = expected_prediction(make_image(32, 48, 0), 16, 24, "RGB" if fmt == "BGR" else "BGR")
    assert not np.array_equal(model.predict(make_image(32, 48, 0))[0], other[0])


def test_onnx_model_refuses_other_backends_and_missing_files(tmp_path):
    folder = write_standin_model(tmp_path / "m")
    os.remove(os.path.join(folder, "model.onnx"))
    with pytest.raises(SidecarError, match="does not exist"):
        OnnxPanopticModel(folder)
    d = sidecar_dict(16, 24)
    d["backend"] = "torchscript"
    (tmp_path / "m" / "model.json").write_text(json.dumps(d))
    with pytest.raises(SidecarError, match="backend is 'torchscript'"):
        OnnxPanopticModel(folder)


# ----------------------------------------------------------------------------- writer


def test_id2rgb_is_panopticapis():
    from panopticapi.utils import id2rgb as reference

    ids = np.array([[0, 1, 255], [256, 65535, 65536 * 200 + 7]], dtype=np.int64)
    assert np.array_equal(id2rgb(ids), reference(ids))


def test_record_counts_areas_and_boxes_on_the_map_and_drops_empty_segments():
    pan = np.zeros((6, 8), np.int32)
    pan[1:4, 2:7] = 5
    pan[5, 0] = 9
    info = [
        {"id": 5, "category_id": 13, "isthing": False, "area": 999},
        {"id": 7, "category_id": 3, "isthing": True, "score": 0.5},  # no pixel
        {"id": 9, "category_id": 3, "isthing": True, "score": 0.75},
    ]
    rec = image_record(42, "x.png", pan, info)
    assert rec == {
        "image_id": 42,
        "file_name": "x.png",
        "segments_info": [
            {"id": 5, "category_id": 13, "iscrowd": 0, "isthing": 0, "area": 15,
             "bbox": [2, 1, 5, 3]},
            {"id": 9, "category_id": 3, "iscrowd": 0, "isthing": 1, "area": 1,
             "bbox": [0, 5, 1, 1], "score": 0.75},
        ],
    }  # fmt: skip
    pan[0, 0] = 11
    with pytest.raises(ValueError, match=r"segment id\(s\) \[11\] .* not in segments_info"):
        image_record(42, "x.png", pan, info)


def test_writer_png_round_trips_and_json_keeps_the_given_order(tmp_path):
    writer = PanopticResultsWriter(str(tmp_path), [{"id": 3, "name": "c", "isthing": 1}])
    maps = {}
    for i, name in enumerate(["b/img0.png", "a/img0.png"]):
        pan = np.full((5, 6), 300 + i, np.int32)
        pan[0] = 70000
        maps[name] = pan
        info = [{"id": 300 + i, "category_id": 3, "isthing": True, "score": 1.0},
                {"id": 70000, "category_id": 3, "isthing": True, "score": 0.5}]  # fmt: skip
        assert not writer.is_done(name)
        writer.write(name, f"id{i}", pan, info)
        assert writer.is_done(name)
    for name, pan in maps.items():
        assert np.array_equal(read_panoptic_png(str(tmp_path / "panoptic" / name)), pan)
    path = writer.write_json(["a/img0.png", "b/img0.png"])
    data = json.load(open(path))
    assert [a["image_id"] for a in data["annotations"]] == ["id1", "id0"]
    assert data["categories"] == [{"id": 3, "name": "c", "isthing": 1}]
    assert not [f for f in os.listdir(tmp_path / "panoptic" / "a") if f.startswith(".")]


# ----------------------------------------------------------------------------- inputs


def test_inputs_in_two_folders_with_the_same_file_name_do_not_collide(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(make_image(8, 8, 0)).save(tmp_path / sub / "img0.png")
    Image.fromarray(make_image(8, 8, 0)).save(tmp_path / "a" / "img0.jpg")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    items = items_from_inputs([str(tmp_path / "a"), str(tmp_path / "b" / "*.png")])
    assert [(it.image_id, it.name) for it in items] == [
        ("a/img0.jpg", "a/img0.jpg.png"),
        ("a/img0.png", "a/img0.png.png"),
        ("b/img0", "b/img0.png"),
    ]
    assert png_names(["x/y.jpg", "z.png"]) == ["x/y.png", "z.png"]
    with pytest.raises(RuntimeUsageError, match="no such file, folder or pattern"):
        items_from_inputs([str(tmp_path / "missing*.png")])


def test_image_info_ids_may_be_ints_or_strings(tmp_path):
    info = {"images": [{"id": 7, "file_name": "x/1.jpg"}, {"id": "abc", "file_name": "2.png"}]}
    (tmp_path / "info.json").write_text(json.dumps(info))
    items = items_from_image_info(str(tmp_path / "info.json"), str(tmp_path))
    assert [(it.image_id, it.name, it.path) for it in items] == [
        (7, "x/1.png", os.path.join(str(tmp_path), "x/1.jpg")),
        ("abc", "2.png", os.path.join(str(tmp_path), "2.png")),
    ]


@pytest.mark.parametrize(
    "images, message",
    [
        ([{"id": 1}], "needs 'id' and 'file_name'"),
        ([{"id": 1.5, "file_name": "a.jpg"}], "expected int or str"),
        ([{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}], "duplicate id 1"),
        ([{"id": 1, "file_name": "/abs.jpg"}], "relative to --image-root"),
        ([], "no 'images' list"),
    ],
)
def test_bad_image_info_is_one_line(tmp_path, images, message):
    (tmp_path / "info.json").write_text(json.dumps({"images": images}))
    with pytest.raises(RuntimeUsageError, match=message) as e:
        items_from_image_info(str(tmp_path / "info.json"), str(tmp_path))
    assert str(tmp_path / "info.json") in str(e.value)


def test_standin_categories_are_the_synthetic_datasets():
    from jsis_d2.data.label_space import LabelSpace
    from jsis_d2.data.synthetic import SYNTHETIC_CATEGORIES

    assert [c["id"] for c in CATEGORIES] == LabelSpace(SYNTHETIC_CATEGORIES).dataset_ids


def test_category_agreement_counts_pixels_by_category_not_segment_id(tmp_path):
    from jsis_runtime.compare import category_agreement

    cats = [{"id": 3, "name": "c", "isthing": 1}, {"id": 13, "name": "s", "isthing": 0}]
    a, b = (
        PanopticResultsWriter(str(tmp_path / "a"), cats),
        PanopticResultsWriter(str(tmp_path / "b"), cats),
    )
    pan = np.zeros((4, 5), np.int32)
    pan[:, 2:] = 1
    a.write("x.png", 1, pan, [{"id": 1, "category_id": 13, "isthing": False}])
    other = pan * 7  # other segment ids, same categories ...
    other[0, 0] = 7  # ... but one void pixel became "s"
    b.write("x.png", 1, other, [{"id": 7, "category_id": 13, "isthing": False}])
    for w in (a, b):
        w.write_json(["x.png"])
    agree, total, per_image = category_agreement(str(tmp_path / "a"), str(tmp_path / "b"))
    assert (agree, total) == (19, 20) and per_image == {1: 0.95}


@pytest.mark.parametrize("scale", [1, 100003])  # small ids (lookup table) and large (sorting)
def test_record_areas_and_boxes_equal_a_per_segment_count(scale):
    rng = np.random.default_rng(scale)
    pan = np.repeat(np.repeat(rng.integers(0, 12, (6, 9)), 5, 0), 3, 1) * scale
    pan[rng.random(pan.shape) < 0.1] = 5 * scale  # scattered pixels: boxes wider than blocks
    ids = [int(i) for i in np.unique(pan) if i]
    info = [{"id": i, "category_id": 3, "isthing": True, "score": 0.5} for i in ids]
    rec = image_record(1, "x.png", pan, info)
    for seg in rec["segments_info"]:
        ys, xs = np.nonzero(pan == seg["id"])
        box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert seg["area"] == len(xs) and seg["bbox"] == [int(v) for v in box]
    assert [s["id"] for s in rec["segments_info"]] == ids
