"""JSISDatasetMapper: outputs, transforms, crowd/void handling, bad-input errors and skipping."""

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from jsis_d2.config import ConfigError, get_jsis_cfg
from jsis_d2.data.augmentations import build_augmentations
from jsis_d2.data.dataset_mapper import BadSampleError, JSISDatasetMapper
from jsis_d2.data.panoptic_png import write_panoptic_png

from detectron2.data import transforms as T
from detectron2.data.common import MapDataset

H, W = 12, 16
# contiguous: 0, 1 things; 2, 3 stuff
SEGMENTS = [
    {"id": 1000, "category_id": 2, "isthing": False, "iscrowd": 0},
    {"id": 2000, "category_id": 3, "isthing": False, "iscrowd": 0},
    {"id": 1001, "category_id": 0, "isthing": True, "iscrowd": 0},
    {"id": 1002, "category_id": 1, "isthing": True, "iscrowd": 0},
    {"id": 1003, "category_id": 1, "isthing": True, "iscrowd": 1},
]


def _ids():
    pan = np.full((H, W), 1000, np.int64)
    pan[6:, :] = 2000
    pan[2:5, 3:9] = 1001  # rows 2-4, cols 3-8
    pan[7:11, 10:14] = 1002  # rows 7-10, cols 10-13
    pan[0:2, 12:16] = 1003  # crowd
    pan[5, :4] = 0  # void
    return pan


def _sample(tmp_path, name="a", image_mode="RGB", ids=None, image_size=(H, W)):
    """Write image + panoptic PNG; return the dataset dict (contiguous categories)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (*image_size, 3), dtype=np.uint8)
    img = Image.fromarray(rgb).convert(image_mode)
    image_file = os.path.join(tmp_path, f"{name}.png")
    img.save(image_file)
    pan_file = os.path.join(tmp_path, f"{name}_pan.png")
    write_panoptic_png(pan_file, _ids() if ids is None else ids)
    return {
        "file_name": image_file,
        "image_id": name,
        "height": H,
        "width": W,
        "pan_seg_file_name": pan_file,
        "segments_info": [dict(s) for s in SEGMENTS],
    }, np.array(img.convert("RGB"))


def _mapper(is_train=True, augs=None, **kw):
    kw.setdefault("image_format", "RGB")
    return JSISDatasetMapper(is_train, augmentations=augs or [], **kw)


def test_train_output_at_original_size(tmp_path):
    d, rgb = _sample(tmp_path)
    out = _mapper(augs=[T.Resize((H, W))])(d)
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, H, W)
    assert torch.equal(out["image"], torch.from_numpy(rgb.copy()).permute(2, 0, 1))
    assert (out["height"], out["width"], out["image_id"]) == (H, W, "a")
    pan = _ids()
    sem = out["sem_seg"]
    assert sem.dtype == torch.int64 and sem.shape == (H, W)
    for s in SEGMENTS:
        assert (sem[torch.from_numpy(pan == s["id"])] == s["category_id"]).all()
    assert (sem[5, :4] == 255).all()
    inst = out["instances"]
    assert inst.image_size == (H, W)
    assert inst.gt_classes.tolist() == [0, 1]  # crowd 1003 is not an instance
    assert torch.equal(inst.gt_masks.tensor[0], torch.from_numpy(pan == 1001))
    assert torch.equal(inst.gt_masks.tensor[1], torch.from_numpy(pan == 1002))
    torch.testing.assert_close(
        inst.gt_boxes.tensor, torch.tensor([[3.0, 2.0, 9.0, 5.0], [10.0, 7.0, 14.0, 11.0]])
    )
    # the input dict is not modified
    assert "image" not in d and len(d["segments_info"]) == 5


def test_crowd_ignore_mode(tmp_path):
    d, _ = _sample(tmp_path)
    out = _mapper(crowd_sem_seg="ignore")(d)
    assert (out["sem_seg"][0:2, 12:16] == 255).all()
    assert (out["sem_seg"][7:11, 10:14] == 1).all()
    with pytest.raises(ValueError, match="CROWD_SEM_SEG"):
        _mapper(crowd_sem_seg="nope")


def test_resize_and_flip_apply_to_image_and_targets(tmp_path):
    d, rgb = _sample(tmp_path)
    resize = T.ResizeTransform(H, W, 2 * H, W // 2)  # aspect not kept
    out = _mapper(augs=[resize, T.HFlipTransform(W // 2)])(d)
    pan = _ids()
    ys = np.arange(2 * H) // 2  # nearest rows
    xs = (np.arange(W // 2) * 2 + 1)[::-1]  # PIL nearest samples pixel centers; then flipped
    expected_pan = pan[ys][:, xs]
    exp_img = np.asarray(Image.fromarray(rgb).resize((W // 2, 2 * H), Image.BILINEAR))[:, ::-1]
    assert out["image"].shape == (3, 2 * H, W // 2)
    assert torch.equal(out["image"], torch.from_numpy(exp_img.copy()).permute(2, 0, 1))
    lut = {0: 255, **{s["id"]: s["category_id"] for s in SEGMENTS}}
    np.testing.assert_array_equal(out["sem_seg"].numpy(), np.vectorize(lut.get)(expected_pan))
    inst = out["instances"]
    assert inst.image_size == (2 * H, W // 2)
    for m, sid in zip(inst.gt_masks.tensor, (1001, 1002)):
        np.testing.assert_array_equal(m.numpy(), expected_pan == sid)
        ys_, xs_ = np.nonzero(expected_pan == sid)
    # box of the last instance from the resized mask (max exclusive)
    assert inst.gt_boxes.tensor[1].tolist() == [xs_.min(), ys_.min(), xs_.max() + 1, ys_.max() + 1]
    assert (out["height"], out["width"]) == (H, W)  # original size


def test_many_segments_path_matches_nearest_resize(tmp_path):
    """More than 254 segments: the label map goes through the RGB-encoded path."""
    h, w = 20, 16  # 320 one-pixel segments
    ids = (np.arange(h * w, dtype=np.int64).reshape(h, w) * 37 + 1) % 65000 + 1
    d, _ = _sample(tmp_path, ids=ids, image_size=(h, w))
    d["height"], d["width"] = h, w
    d["segments_info"] = [
        {"id": int(i), "category_id": int(i % 4), "isthing": bool(i % 4 < 2), "iscrowd": 0}
        for i in ids.ravel()
    ]
    out = _mapper(augs=[T.Resize((2 * h, 2 * w))])(d)
    up = ids.repeat(2, 0).repeat(2, 1)  # exact 2x nearest upscale = pixel replication
    np.testing.assert_array_equal(out["sem_seg"].numpy(), up % 4)
    things = [i for i in ids.ravel() if i % 4 < 2]
    assert len(out["instances"]) == len(things) and len(d["segments_info"]) > 255
    assert out["instances"].gt_classes.tolist() == [i % 4 for i in things]
    np.testing.assert_array_equal(out["instances"].gt_masks.tensor[7].numpy(), up == things[7])
    assert (
        out["instances"].gt_boxes.tensor[:, 2:] - out["instances"].gt_boxes.tensor[:, :2] == 2
    ).all()


def test_fixed_size_resize_is_a_noop_at_the_target_size():
    from jsis_d2.data.augmentations import FixedSizeResize

    img = np.zeros((H, W, 3), np.uint8)
    assert isinstance(FixedSizeResize((H, W)).get_transform(img), T.NoOpTransform)
    t = FixedSizeResize((H, 2 * W)).get_transform(img)
    assert isinstance(t, T.ResizeTransform) and (t.new_h, t.new_w) == (H, 2 * W)


def test_test_mode_passes_annotations_through(tmp_path):
    d, _ = _sample(tmp_path)
    out = _mapper(is_train=False, augs=[T.Resize((8, 8))])(d)
    assert out["image"].shape == (3, 8, 8)
    assert "sem_seg" not in out and "instances" not in out
    assert out["pan_seg_file_name"] == d["pan_seg_file_name"]
    assert out["segments_info"] == d["segments_info"]
    assert (out["height"], out["width"], out["file_name"]) == (H, W, d["file_name"])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_palette_images_are_converted(tmp_path, mode):
    d, rgb = _sample(tmp_path, image_mode=mode)
    out = _mapper(image_format="BGR")(d)
    assert out["image"].shape == (3, H, W)
    assert torch.equal(out["image"], torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1))


def test_from_config(tmp_path):
    cfg = get_jsis_cfg()
    cfg.INPUT.JSIS.FIXED_SIZE = [10, 20]
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.INPUT.JSIS.CROWD_SEM_SEG = "ignore"
    m = JSISDatasetMapper(cfg, is_train=True)
    assert m.crowd_sem_seg == "ignore" and m.image_format == cfg.INPUT.FORMAT == "BGR"
    augs = m.augmentations.augs
    assert isinstance(augs[0], T.Resize) and augs[0].shape == (10, 20)
    assert isinstance(augs[1], T.RandomFlip)
    d, _ = _sample(tmp_path)
    out = m(d)
    assert out["image"].shape == (3, 10, 20) and out["sem_seg"].shape == (10, 20)
    test_mapper = JSISDatasetMapper(cfg, is_train=False)
    assert len(test_mapper.augmentations.augs) == 1  # no flip at test time


def test_build_augmentations_fallback_and_errors():
    cfg = get_jsis_cfg()
    cfg.INPUT.JSIS.FIXED_SIZE = []
    cfg.INPUT.RANDOM_FLIP = "none"
    train = build_augmentations(cfg, True)
    assert len(train) == 1 and isinstance(train[0], T.ResizeShortestEdge)
    assert train[0].short_edge_length == tuple(cfg.INPUT.MIN_SIZE_TRAIN)
    test = build_augmentations(cfg, False)
    assert test[0].short_edge_length == (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    cfg.INPUT.JSIS.FIXED_SIZE = [400]
    with pytest.raises(ConfigError, match="FIXED_SIZE"):
        build_augmentations(cfg, True)
    cfg.INPUT.JSIS.FIXED_SIZE = [4, 4]
    cfg.INPUT.RANDOM_FLIP = "diagonal"
    with pytest.raises(ConfigError, match="RANDOM_FLIP"):
        build_augmentations(cfg, True)


# ---------------------------------------------------------------------------- bad input
def _break(kind, tmp_path):
    d, _ = _sample(tmp_path)
    if kind == "missing image":
        os.remove(d["file_name"])
        return d, d["file_name"], "not found"
    if kind == "corrupt image":
        with open(d["file_name"], "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n garbage")
        return d, d["file_name"], "cannot read image"
    if kind == "image size differs from dict":
        d["height"] = H + 1
        return d, d["file_name"], "dataset entry"
    if kind == "missing png":
        os.remove(d["pan_seg_file_name"])
        return d, d["pan_seg_file_name"], "not found"
    if kind == "corrupt png":
        with open(d["pan_seg_file_name"], "wb") as f:
            f.write(b"not a png")
        return d, d["pan_seg_file_name"], "cannot read panoptic PNG"
    if kind == "png size differs from image":
        write_panoptic_png(d["pan_seg_file_name"], _ids()[:, :-2])
        return d, d["pan_seg_file_name"], "but its image"
    if kind == "id in png not in json":
        ids = _ids()
        ids[0, 0] = 4242
        write_panoptic_png(d["pan_seg_file_name"], ids)
        return d, d["pan_seg_file_name"], "4242"
    if kind == "id in json not in png":
        d["segments_info"].append({"id": 777, "category_id": 0, "isthing": True, "iscrowd": 0})
        return d, d["pan_seg_file_name"], "777"
    raise AssertionError(kind)


BAD_KINDS = [
    "missing image",
    "corrupt image",
    "image size differs from dict",
    "missing png",
    "corrupt png",
    "png size differs from image",
    "id in png not in json",
    "id in json not in png",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_raises_naming_the_file(tmp_path, kind):
    d, path, words = _break(kind, tmp_path)
    with pytest.raises(BadSampleError) as e:
        _mapper()(d)
    assert path in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("kind", ["missing image", "id in png not in json"])
def test_skip_bad_samples_logs_file_and_count(tmp_path, kind, caplog):
    d, path, _ = _break(kind, tmp_path)
    m = _mapper(skip_bad_samples=True)
    with caplog.at_level(logging.WARNING, logger="jsis_d2.data.dataset_mapper"):
        assert m(d) is None
        assert m(d) is None
    assert m.num_skipped == 2
    # warnings only: an earlier test's setup_logger may leave jsis_d2 at INFO (the mapper's
    # "Augmentations used" line is then captured too)
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(msgs) == 2 and all(path in s for s in msgs)
    assert "2 bad sample(s) skipped" in msgs[1]
    # a test-time mapper never skips (evaluation must see every image)
    with pytest.raises(BadSampleError):
        _mapper(is_train=False, skip_bad_samples=True)(_break("missing image", tmp_path)[0])


def test_map_dataset_draws_another_sample(tmp_path):
    good, _ = _sample(tmp_path, name="good")
    bad = dict(good, file_name=str(tmp_path / "missing.jpg"), image_id="bad")
    ds = MapDataset([bad, good], _mapper(skip_bad_samples=True))
    assert ds[0]["image_id"] == "good"
