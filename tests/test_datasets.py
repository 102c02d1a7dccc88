"""Dataset registration and loading: real COCO sample, Mapillary layout, custom, errors."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from jsis_d2.config import get_jsis_cfg
from jsis_d2.data import JSISDatasetMapper, LabelSpace
from jsis_d2.data.datasets import DatasetNotFoundError, register_all, register_panoptic_dataset
from jsis_d2.data.datasets.builtin import datasets_root, mapillary_vistas_categories
from jsis_d2.data.panoptic_png import read_panoptic_png, write_panoptic_png

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

BUILTIN = {
    "jsis_coco_2017_train_panoptic": (133, 80),
    "jsis_coco_2017_val_panoptic": (133, 80),
    "jsis_mapillary_vistas_train_panoptic": (65, 37),
    "jsis_mapillary_vistas_val_panoptic": (65, 37),
    "jsis_synthetic_train": (9, 4),
    "jsis_synthetic_val": (9, 4),
}


@pytest.fixture
def registered():
    """Names registered by a test; removed afterwards."""
    names = []
    yield names
    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def _mapper(size, is_train=True):
    cfg = get_jsis_cfg()
    cfg.INPUT.JSIS.FIXED_SIZE = list(size)
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.FORMAT = "RGB"
    return JSISDatasetMapper(cfg, is_train=is_train)


def _read_ids(png):
    return read_panoptic_png(png)


# ------------------------------------------------------------------------------ builtin
def test_builtin_datasets_registered_with_metadata():
    for name, (k, t) in BUILTIN.items():
        assert name in DatasetCatalog.list()
        md = MetadataCatalog.get(name)
        assert len(md.stuff_classes) == k and len(md.thing_classes) == t == md.num_things
        assert md.is_thing == [i < t for i in range(k)]
        assert (md.ignore_label, md.label_divisor, md.evaluator_type) == (
            255,
            1000,
            "jsis_panoptic",
        )
        assert sorted(md.stuff_dataset_id_to_contiguous_id.values()) == list(range(k))
        assert md.panoptic_json.startswith(datasets_root())
    assert MetadataCatalog.get("jsis_coco_2017_val_panoptic").stuff_classes[0] == "person"
    # detectron2's own names are untouched
    assert (
        MetadataCatalog.get("coco_2017_val_panoptic").get("evaluator_type") == "coco_panoptic_seg"
    )


def test_register_all_is_idempotent():
    before = DatasetCatalog.list()
    register_all()
    register_all()
    assert sorted(DatasetCatalog.list()) == sorted(before)


def test_missing_data_gives_clear_error(tmp_path):
    register_all(str(tmp_path))
    try:
        with pytest.raises(DatasetNotFoundError) as e:
            DatasetCatalog.get("jsis_synthetic_train")
        assert str(tmp_path) in str(e.value) and "make_synthetic_dataset.py" in str(e.value)
        with pytest.raises(DatasetNotFoundError, match="panoptic_val2017.json.*\n.*cocodataset"):
            DatasetCatalog.get("jsis_coco_2017_val_panoptic")
    finally:
        register_all()


def test_packaged_mapillary_table(mapillary_categories_file):
    cats = mapillary_vistas_categories()
    with open(mapillary_categories_file) as f:
        assert cats == json.load(f)
    ls = LabelSpace(cats)
    assert (ls.num_classes, ls.num_things) == (65, 37)


# ------------------------------------------------------------------------------ real COCO
def test_coco_sample_loads_through_registration(coco_sample_dir, registered):
    js = os.path.join(coco_sample_dir, "panoptic_val2017_sample.json")
    register_panoptic_dataset(
        "jsis_test_coco_sample",
        os.path.join(coco_sample_dir, "images"),
        os.path.join(coco_sample_dir, "panoptic"),
        js,
        COCO_CATEGORIES,
    )
    registered.append("jsis_test_coco_sample")
    dicts = DatasetCatalog.get("jsis_test_coco_sample")
    with open(js) as f:
        gt = json.load(f)
    ls = LabelSpace(COCO_CATEGORIES)
    assert len(dicts) == len(gt["annotations"]) == 2
    images = {im["id"]: im for im in gt["images"]}
    mapper_by_size = {}
    for d, ann in zip(dicts, gt["annotations"]):
        im = images[ann["image_id"]]
        assert d["image_id"] == ann["image_id"]
        assert (d["height"], d["width"]) == (im["height"], im["width"])
        assert os.path.basename(d["file_name"]) == im["file_name"]
        # every segment appears with its category (contiguous) and its JSON fields
        assert len(d["segments_info"]) == len(ann["segments_info"])
        for s, g in zip(d["segments_info"], ann["segments_info"]):
            assert s["id"] == g["id"] and s["iscrowd"] == g["iscrowd"]
            assert s["category_id"] == ls.to_contiguous(g["category_id"])
            assert s["isthing"] == ls.is_thing[ls.to_contiguous(g["category_id"])]
            assert s["isthing"] == (g["category_id"] <= 90)  # COCO: things are ids 1..90
            assert (s["area"], s["bbox"]) == (g["area"], g["bbox"])

        # targets at the original size agree pixel for pixel with the decoded PNG
        size = (d["height"], d["width"])
        mapper = mapper_by_size.setdefault(size, _mapper(size))
        out = mapper(d)
        ids = _read_ids(d["pan_seg_file_name"])
        np.testing.assert_array_equal(
            out["image"].permute(1, 2, 0).numpy(), utils.read_image(d["file_name"], "RGB")
        )
        sem = out["sem_seg"].numpy()
        expected = np.full(ids.shape, 255)
        for g in ann["segments_info"]:
            expected[ids == g["id"]] = ls.to_contiguous(g["category_id"])
        np.testing.assert_array_equal(sem, expected)
        assert (sem[ids == 0] == 255).all()
        things = [g for g in ann["segments_info"] if g["category_id"] <= 90 and not g["iscrowd"]]
        inst = out["instances"]
        assert len(inst) == len(things) > 0
        for i, g in enumerate(things):
            assert torch.equal(inst.gt_masks.tensor[i], torch.from_numpy(ids == g["id"]))
            assert inst.gt_classes[i] == ls.to_contiguous(g["category_id"]) < 80
            x, y, w, h = g["bbox"]  # official XYWH (w = max - min + 1) -> XYXY max-exclusive
            assert inst.gt_boxes.tensor[i].tolist() == [x, y, x + w, y + h]
        assert int(inst.gt_masks.tensor.sum()) == sum(g["area"] for g in things)


# ------------------------------------------------------------------------------ Mapillary
def _write_mapillary_split(root, split, cats):
    d = os.path.join(root, "mapillary_vistas", split)
    os.makedirs(os.path.join(d, "images"))
    os.makedirs(os.path.join(d, "panoptic"))
    thing = [c for c in cats if c["isthing"]][5]
    stuffs = [c for c in cats if not c["isthing"]][:2]
    h, w = 24, 40
    ids = np.full((h, w), 1, np.int64)
    ids[12:, :] = 2
    ids[4:10, 5:15] = 3
    ids[0, 0] = 0
    img_id = "-2Xy_AbC0dEf"  # Mapillary image ids are strings
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(
        os.path.join(d, "images", f"{img_id}.jpg")
    )
    write_panoptic_png(os.path.join(d, "panoptic", f"{img_id}.png"), ids)
    segs = [
        {"id": 1, "category_id": stuffs[0]["id"], "iscrowd": 0, "area": 0, "bbox": [0, 0, 1, 1]},
        {"id": 2, "category_id": stuffs[1]["id"], "iscrowd": 0, "area": 0, "bbox": [0, 0, 1, 1]},
        {"id": 3, "category_id": thing["id"], "iscrowd": 0, "area": 60, "bbox": [5, 4, 10, 6]},
    ]
    data = {
        "images": [{"id": img_id, "file_name": f"{img_id}.jpg", "height": h, "width": w}],
        "annotations": [{"image_id": img_id, "file_name": f"{img_id}.png", "segments_info": segs}],
        "categories": cats,
    }
    with open(os.path.join(d, "panoptic", "panoptic_2018.json"), "w") as f:
        json.dump(data, f)
    return img_id, thing, stuffs


def test_mapillary_layout_loads_via_builtin(tmp_path, monkeypatch, mapillary_categories_file):
    with open(mapillary_categories_file) as f:
        cats = json.load(f)
    img_id, thing, stuffs = _write_mapillary_split(str(tmp_path), "training", cats)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_all()
    try:
        dicts = DatasetCatalog.get("jsis_mapillary_vistas_train_panoptic")
        ls = LabelSpace(cats)
        assert len(dicts) == 1 and dicts[0]["image_id"] == img_id
        d = dicts[0]
        split_dir = os.path.join(str(tmp_path), "mapillary_vistas", "training")
        assert d["file_name"] == os.path.join(split_dir, "images", f"{img_id}.jpg")
        assert [s["category_id"] for s in d["segments_info"]] == [
            ls.to_contiguous(c["id"]) for c in (stuffs[0], stuffs[1], thing)
        ]
        assert [s["isthing"] for s in d["segments_info"]] == [False, False, True]
        out = _mapper((12, 20))(d)  # half size
        assert out["image"].shape == (3, 12, 20) and (out["height"], out["width"]) == (24, 40)
        assert out["instances"].gt_classes.tolist() == [ls.to_contiguous(thing["id"])]
        assert out["instances"].gt_boxes.tensor.tolist() == [[2.0, 2.0, 7.0, 5.0]]
        assert (out["sem_seg"][7:, :] == ls.to_contiguous(stuffs[1]["id"])).all()
        # the validation split is absent: clear error naming its path and where to get it
        with pytest.raises(DatasetNotFoundError, match="validation.*\n.*mapillary"):
            DatasetCatalog.get("jsis_mapillary_vistas_val_panoptic")
    finally:
        monkeypatch.undo()
        register_all()


# ------------------------------------------------------------------------------ custom
CUSTOM_CATS = [
    {"id": 7, "name": "tree", "isthing": 0},
    {"id": 3, "name": "car", "isthing": 1},
]


def _custom_dataset(tmp_path, seg_category=3, with_images=True):
    (tmp_path / "img").mkdir()
    (tmp_path / "pan").mkdir()
    ids = np.full((8, 8), 70, np.int64)
    ids[2:4, 2:5] = 31
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "x.jpg")
    write_panoptic_png(str(tmp_path / "pan" / "x.png"), ids)
    data = {
        "annotations": [
            {
                "image_id": 5,
                "file_name": "x.png",
                "segments_info": [
                    {"id": 70, "category_id": 7, "iscrowd": 0},
                    {"id": 31, "category_id": seg_category, "iscrowd": 0},
                ],
            }
        ],
        "categories": CUSTOM_CATS,
    }
    if with_images:
        data["images"] = [{"id": 5, "file_name": "x.jpg", "height": 8, "width": 8}]
    js = tmp_path / "pan.json"
    js.write_text(json.dumps(data))
    return str(tmp_path / "img"), str(tmp_path / "pan"), str(js)


def test_custom_dataset_and_reregistration(tmp_path, registered):
    img, pan, js = _custom_dataset(tmp_path, with_images=False)
    register_panoptic_dataset("jsis_test_custom", img, pan, js, CUSTOM_CATS)
    register_panoptic_dataset("jsis_test_custom", img, pan, js, None)  # categories from the JSON
    registered.append("jsis_test_custom")
    assert DatasetCatalog.list().count("jsis_test_custom") == 1
    md = MetadataCatalog.get("jsis_test_custom")
    assert md.thing_classes == ["car"] and md.stuff_classes == ["car", "tree"]
    assert md.stuff_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    (d,) = DatasetCatalog.get("jsis_test_custom")
    # no "images" entry: image = PNG stem + .jpg, size from the file header
    assert d["file_name"].endswith("x.jpg") and (d["height"], d["width"]) == (8, 8)
    assert [(s["id"], s["category_id"], s["isthing"]) for s in d["segments_info"]] == [
        (70, 1, False),
        (31, 0, True),
    ]
    out = _mapper((8, 8))(d)
    assert out["instances"].gt_boxes.tensor.tolist() == [[2.0, 2.0, 5.0, 4.0]]


def test_unknown_category_id_fails_at_load(tmp_path, registered):
    img, pan, js = _custom_dataset(tmp_path, seg_category=99)
    register_panoptic_dataset("jsis_test_badcat", img, pan, js, CUSTOM_CATS)
    registered.append("jsis_test_badcat")
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get("jsis_test_badcat")
    assert js in str(e.value) and "99" in str(e.value) and "x.png" in str(e.value)


# ------------------------------------------------------------------ bad dataset JSON (issue 16)


def _two_image_dataset(tmp_path, mutate):
    """Two 8x8 images / PNGs (a.jpg+a.png id 1, b.jpg+b.png id 2); ``mutate(data)`` breaks it."""
    (tmp_path / "img").mkdir()
    (tmp_path / "pan").mkdir()
    anns, images = [], []
    for iid, stem in ((1, "a"), (2, "b")):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / f"{stem}.jpg")
        pan = np.full((8, 8, 3), (70, 0, 0), np.uint8)
        Image.fromarray(pan).save(tmp_path / "pan" / f"{stem}.png")
        images.append({"id": iid, "file_name": f"{stem}.jpg", "height": 8, "width": 8})
        anns.append(
            {
                "image_id": iid,
                "file_name": f"{stem}.png",
                "segments_info": [{"id": 70, "category_id": 7, "iscrowd": 0}],
            }
        )
    data = {"images": images, "annotations": anns, "categories": CUSTOM_CATS}
    mutate(data)
    js = tmp_path / "pan.json"
    js.write_text(json.dumps(data))
    return str(tmp_path / "img"), str(tmp_path / "pan"), str(js)


def _set(path, value):
    def mutate(data):
        *keys, last = path
        d = data
        for k in keys:
            d = d[k]
        d[last] = value

    return mutate


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (_set(("images", 1, "id"), 1), r"image id 1 .*2 'images' entries"),
        (_set(("annotations", 1, "image_id"), 1), r"image_id 1 .*2 annotations"),
        (_set(("images", 1, "file_name"), "a.jpg"), r"image file a\.jpg .*images 1 and 2"),
        (_set(("annotations", 1, "file_name"), "a.png"), r"PNG a\.png .*image_id 1 and 2"),
    ],
    ids=["image_id_in_images", "annotation_image_id", "image_file_name", "png_file_name"],
)
def test_duplicates_in_dataset_json_are_refused(tmp_path, registered, mutate, pattern):
    """Duplicates would pair a PNG with another image's pixels (or train twice on one)."""
    img, pan, js = _two_image_dataset(tmp_path, mutate)
    register_panoptic_dataset("jsis_test_dup", img, pan, js, CUSTOM_CATS)
    registered.append("jsis_test_dup")
    with pytest.raises(ValueError, match=pattern) as e:
        DatasetCatalog.get("jsis_test_dup")
    assert js in str(e.value) and "\n" not in str(e.value)


def test_annotation_without_segments_info_names_file_and_image(tmp_path, registered):
    def mutate(data):
        del data["annotations"][1]["segments_info"]

    img, pan, js = _two_image_dataset(tmp_path, mutate)
    register_panoptic_dataset("jsis_test_noseg", img, pan, js, CUSTOM_CATS)
    registered.append("jsis_test_noseg")
    with pytest.raises(ValueError, match=r"pan\.json: annotation of image_id 2 .*'segments_info'"):
        DatasetCatalog.get("jsis_test_noseg")


def test_register_with_categories_from_a_malformed_json(tmp_path):
    js = tmp_path / "broken.json"
    js.write_text('{"categories": [{"id": 1,')
    with pytest.raises(ValueError, match=r"broken\.json.*does not parse") as e:
        register_panoptic_dataset("jsis_test_broken", str(tmp_path), str(tmp_path), str(js), None)
    assert not isinstance(e.value, json.JSONDecodeError)
    assert "jsis_test_broken" not in DatasetCatalog.list()


def test_categories_without_isthing_name_the_file_and_category(tmp_path):
    js = tmp_path / "cats.json"
    js.write_text(
        json.dumps(
            {"categories": [{"id": 7, "name": "tree", "isthing": 0}, {"id": 3, "name": "car"}]}
        )
    )
    with pytest.raises(ValueError, match=r"cats\.json: category 3 \('car'\) has no 'isthing'"):
        register_panoptic_dataset("jsis_test_noisthing", str(tmp_path), str(tmp_path), str(js))
    with pytest.raises(ValueError, match=r"category 3 \('car'\) has no 'isthing'"):
        LabelSpace([{"id": 3, "name": "car"}])
    assert "jsis_test_noisthing" not in DatasetCatalog.list()
