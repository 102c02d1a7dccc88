"""Cityscapes panoptic built in: a tiny generated layout as cityscapesscripts'
``createPanopticImgs`` writes it (two cities per split, STRING image ids, label ids 7..33,
images in city folders, 64x128), loaded through ``jsis_cityscapes_fine_panoptic_{train,val}``,
trained a few iterations, evaluated; the image index's errors."""

import json
import os

import numpy as np
import pytest
import torch
from _quick_train import train_argv
from PIL import Image

from jsis_d2.config import setup_cfg
from jsis_d2.data import LabelSpace
from jsis_d2.data.datasets import DatasetNotFoundError, register_all
from jsis_d2.data.datasets.builtin import cityscapes_categories, datasets_root
from jsis_d2.data.datasets.image_index import (
    DuplicateImageError,
    ImageNotFoundError,
    index_images,
)
from jsis_d2.data.panoptic_png import read_panoptic_png, write_panoptic_png
from jsis_d2.engine.checks import check_datasets
from jsis_d2.engine.launcher import run
from jsis_d2.engine.schedule import resolve_epoch_schedule
from jsis_d2.evaluation import JSISEvaluator, pq_compute

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BitMasks, Instances

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CITYSCAPES_CONFIG = os.path.join(
    ROOT, "configs", "Cityscapes-PanopticSegmentation", "jsis_R50_C4.yaml"
)
NAMES = {s: f"jsis_cityscapes_fine_panoptic_{s}" for s in ("train", "val")}
CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}
H, W = 64, 128
# label id -> name of the classes drawn (createPanopticImgs' category ids = label ids)
ROAD, BUILDING, VEGETATION, SKY, PERSON, CAR = 7, 11, 21, 23, 24, 26


# ----------------------------------------------------------------------------- the layout


def _segments(ids: np.ndarray, crowd: set):
    """segments_info as createPanopticImgs writes it: id, category_id (label id), area, bbox
    (XYWH), iscrowd; stuff segment id = label id, instance id = label id * 1000 + k, a crowd
    ("group") region of a thing class has the label id as segment id."""
    out = []
    for sid in np.unique(ids).tolist():
        if sid == 0:
            continue
        ys, xs = np.nonzero(ids == sid)
        x, y = int(xs.min()), int(ys.min())
        out.append(
            {
                "id": sid,
                "category_id": sid if sid < 1000 else sid // 1000,
                "area": int(len(xs)),
                "bbox": [x, y, int(xs.max()) - x + 1, int(ys.max()) - y + 1],
                "iscrowd": int(sid in crowd),
            }
        )
    return out


def _panoptic_ids(i: int) -> np.ndarray:
    """uint32 [H, W] segment ids of image ``i``: sky, building | vegetation, road, one or two
    cars, a person, a crowd of cars on odd images, a void (ego vehicle) strip."""
    ids = np.full((H, W), ROAD, np.int64)
    ids[:16] = SKY
    ids[16:32, : W // 2] = BUILDING
    ids[16:32, W // 2 :] = VEGETATION
    x = 8 + 6 * i
    ids[36:50, x : x + 24] = CAR * 1000
    if i % 2 == 0:
        ids[38:52, 80:110] = CAR * 1000 + 1
    ids[18:44, 60 + i : 68 + i] = PERSON * 1000
    if i % 2 == 1:
        ids[52:58, 84:116] = CAR  # crowd
    ids[60:, :] = 0  # void
    return ids


def make_tiny_cityscapes(root: str, per_city: int = 2) -> dict:
    """Write ``root/cityscapes`` (train and val, two cities each, ``per_city`` images per
    city). Returns {split: [image ids]}."""
    cs = os.path.join(root, "cityscapes")
    colors = {c["id"]: c["color"] for c in cityscapes_categories()}
    out = {}
    for split, cities in CITIES.items():
        gt_dir = os.path.join(cs, "gtFine", f"cityscapes_panoptic_{split}")
        os.makedirs(gt_dir)
        images, anns = [], []
        for c, city in enumerate(cities):
            os.makedirs(os.path.join(cs, "leftImg8bit", split, city))
            for j in range(per_city):
                i = c * per_city + j
                stem = f"{city}_{i:06d}_000019"
                ids = _panoptic_ids(i)
                rgb = np.zeros((H, W, 3), np.uint8)
                for sid in np.unique(ids).tolist():
                    label = sid if sid < 1000 else sid // 1000
                    rgb[ids == sid] = colors.get(label, (0, 0, 0))
                rgb = np.clip(rgb + np.random.RandomState(i).randint(-20, 20, rgb.shape), 0, 255)
                image_name = f"{stem}_leftImg8bit.png"
                Image.fromarray(rgb.astype(np.uint8)).save(
                    os.path.join(cs, "leftImg8bit", split, city, image_name)
                )
                png = f"{stem}_gtFine_panoptic.png"
                write_panoptic_png(os.path.join(gt_dir, png), ids)
                crowd = {CAR} if i % 2 else set()
                images.append({"id": stem, "file_name": image_name, "height": H, "width": W})
                anns.append(
                    {"image_id": stem, "file_name": png, "segments_info": _segments(ids, crowd)}
                )
        js = {"images": images, "annotations": anns, "categories": cityscapes_categories()}
        with open(os.path.join(cs, "gtFine", f"cityscapes_panoptic_{split}.json"), "w") as f:
            json.dump(js, f)
        out[split] = [im["id"] for im in images]
    return out


@pytest.fixture
def cityscapes_root(tmp_path, monkeypatch):
    """The tiny layout under ``tmp_path`` as ``$DETECTRON2_DATASETS``, the built-in names
    registered there; afterwards they point at the previous root again."""
    previous = datasets_root()
    root = str(tmp_path / "datasets")
    ids = make_tiny_cityscapes(root)
    monkeypatch.setenv("DETECTRON2_DATASETS", root)
    register_all()
    yield root, ids
    register_all(previous)


def _gt_json(root, split):
    return os.path.join(root, "cityscapes", "gtFine", f"cityscapes_panoptic_{split}.json")


# ----------------------------------------------------------------------------- categories


def test_packaged_categories_are_cityscapes_19_evaluated_labels():
    cats = cityscapes_categories()
    ls = LabelSpace(cats)
    assert (ls.num_classes, ls.num_things) == (19, 8)
    assert [c["id"] for c in cats] == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23] + [
        24,
        25,
        26,
        27,
        28,
        31,
        32,
        33,
    ]
    assert ls.names[:8] == [
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ]
    # the same table as detectron2's own (label id, name, isthing, color)
    from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES

    d2 = {
        (c["id"], c["name"], bool(c["isthing"]), tuple(c["color"])) for c in CITYSCAPES_CATEGORIES
    }
    assert {(c["id"], c["name"], bool(c["isthing"]), tuple(c["color"])) for c in cats} == d2


def test_builtin_names_registered_with_the_cityscapes_label_space():
    for split, name in NAMES.items():
        md = MetadataCatalog.get(name)
        assert (len(md.stuff_classes), md.num_things) == (19, 8)
        assert md.evaluator_type == "jsis_panoptic"
        assert md.image_root == os.path.join(datasets_root(), "cityscapes", "leftImg8bit", split)
        assert md.panoptic_json == _gt_json(datasets_root(), split)
    # the Cityscapes config's K and T are the datasets' (the job's up-front check)
    check_datasets(setup_cfg(CITYSCAPES_CONFIG, ["MODEL.DEVICE", "cpu"]))


def test_missing_files_name_create_panoptic_imgs(tmp_path):
    previous = datasets_root()
    register_all(str(tmp_path))
    try:
        with pytest.raises(DatasetNotFoundError) as e:
            DatasetCatalog.get(NAMES["val"])
    finally:
        register_all(previous)
    msg = str(e.value)
    assert _gt_json(str(tmp_path), "val") in msg and "createPanopticImgs" in msg
    assert len(msg.splitlines()) == 2  # the path, then the one-line hint


# ----------------------------------------------------------------------------- loading


def test_loads_string_ids_and_city_folders(cityscapes_root):
    root, ids = cityscapes_root
    cs = os.path.join(root, "cityscapes")
    for split, name in NAMES.items():
        dicts = DatasetCatalog.get(name)
        assert [d["image_id"] for d in dicts] == ids[split]
        for d in dicts:
            iid = d["image_id"]
            city = iid.split("_")[0]
            assert d["file_name"] == os.path.join(
                cs, "leftImg8bit", split, city, f"{iid}_leftImg8bit.png"
            )
            assert os.path.isfile(d["file_name"])
            assert d["pan_seg_file_name"] == os.path.join(
                cs, "gtFine", f"cityscapes_panoptic_{split}", f"{iid}_gtFine_panoptic.png"
            )
            assert (d["height"], d["width"]) == (H, W)
            ls = LabelSpace(cityscapes_categories())
            pan = read_panoptic_png(d["pan_seg_file_name"])
            for s in d["segments_info"]:
                label = s["id"] if s["id"] < 1000 else s["id"] // 1000
                assert ls.to_dataset_id(s["category_id"]) == label
                assert s["isthing"] == (label >= PERSON)
                assert (pan == s["id"]).sum() == s["area"]
    crowd = [s for d in DatasetCatalog.get(NAMES["train"]) for s in d["segments_info"]]
    assert any(s["iscrowd"] for s in crowd)


def test_image_missing_is_one_line_naming_file_and_root(cityscapes_root):
    root, ids = cityscapes_root
    image_root = os.path.join(root, "cityscapes", "leftImg8bit", "val")
    name = f"{ids['val'][1]}_leftImg8bit.png"
    os.remove(os.path.join(image_root, "frankfurt", name))
    with pytest.raises(DatasetNotFoundError) as e:
        DatasetCatalog.get(NAMES["val"])
    msg = str(e.value)
    assert "\n" not in msg
    assert f"image {name} not found in the image root {image_root}" in msg
    assert _gt_json(root, "val") in msg


def test_image_found_twice_is_one_line_naming_both(cityscapes_root):
    root, ids = cityscapes_root
    image_root = os.path.join(root, "cityscapes", "leftImg8bit", "val")
    name = f"{ids['val'][0]}_leftImg8bit.png"
    src = os.path.join(image_root, "frankfurt", name)
    with open(src, "rb") as f, open(os.path.join(image_root, "lindau", name), "wb") as g:
        g.write(f.read())
    with pytest.raises(ValueError) as e:
        DatasetCatalog.get(NAMES["val"])
    msg = str(e.value)
    assert "\n" not in msg
    assert f"image {name} is in 2 folders under the image root {image_root}" in msg
    assert f"frankfurt/{name}, lindau/{name}" in msg


def test_index_images_rules(tmp_path):
    """Direct file first (also in a root with folders); a name with a folder is taken as it
    is; a flat root keeps the direct path of a missing image (the mapper reports it)."""
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.jpg").write_bytes(b"x")
    assert index_images(str(flat), ["a.jpg", "gone.jpg"]) == {
        "a.jpg": str(flat / "a.jpg"),
        "gone.jpg": str(flat / "gone.jpg"),
    }
    nested = tmp_path / "nested"
    for d in ("x", "y", "x/deep"):
        (nested / d).mkdir(parents=True)
    for f in ("top.jpg", "x/top.jpg", "x/deep/one.jpg", "x/two.jpg", "y/two.jpg"):
        (nested / f).write_bytes(b"x")
    got = index_images(str(nested), ["top.jpg", "one.jpg", "y/two.jpg", "y/nothing.jpg"])
    assert got == {
        "top.jpg": str(nested / "top.jpg"),
        "one.jpg": os.path.join(str(nested), "x", "deep", "one.jpg"),
        "y/two.jpg": os.path.join(str(nested), "y/two.jpg"),
        "y/nothing.jpg": os.path.join(str(nested), "y/nothing.jpg"),
    }
    with pytest.raises(DuplicateImageError, match=r"image two\.jpg is in 2 folders"):
        index_images(str(nested), ["two.jpg"])
    with pytest.raises(ImageNotFoundError, match=r"image gone\.jpg not found .* its 3 sub"):
        index_images(str(nested), ["gone.jpg"])
    # a link back up is walked once, not forever
    os.symlink(str(nested), str(nested / "x" / "loop"))
    assert index_images(str(nested), ["one.jpg"])["one.jpg"].endswith("x/deep/one.jpg")


# ----------------------------------------------------------------------------- evaluation


def _ground_truth_as_prediction(d):
    """The ground truth of a dataset dict as the model's ``panoptic_seg`` and ``instances``
    outputs (crowd regions not predicted)."""
    pan = torch.from_numpy(read_panoptic_png(d["pan_seg_file_name"]).astype(np.int32))
    segs = [
        {"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
        for s in d["segments_info"]
        if not s["iscrowd"]
    ]
    for s in d["segments_info"]:
        if s["iscrowd"]:
            pan[pan == s["id"]] = 0
    things = [s for s in segs if s["isthing"]]
    inst = Instances((H, W))
    inst.pred_masks = torch.stack([pan == s["id"] for s in things])
    inst.pred_boxes = BitMasks(inst.pred_masks).get_bounding_boxes()
    inst.scores = torch.ones(len(things))
    inst.pred_classes = torch.tensor([s["category_id"] for s in things])
    return {"panoptic_seg": (pan, segs), "instances": inst}


def test_pq_compute_of_ground_truth_against_itself_is_100(cityscapes_root):
    root, _ = cityscapes_root
    js = _gt_json(root, "val")
    res = pq_compute(js, js)  # default folders: the JSON path without .json, Cityscapes' layout
    # car, person; road, building, vegetation, sky
    for group, n in (("All", 6), ("Things", 2), ("Stuff", 4)):
        assert res[group]["pq"] == pytest.approx(1.0) and res[group]["n"] == n


def test_evaluator_keeps_string_ids_and_matches_pq_compute(cityscapes_root, tmp_path):
    root, ids = cityscapes_root
    dicts = DatasetCatalog.get(NAMES["val"])
    out = str(tmp_path / "eval")
    ev = JSISEvaluator(NAMES["val"], output_dir=out, distributed=False)
    ev.reset()
    for d in dicts:
        ev.process([d], [_ground_truth_as_prediction(d)])
    results = ev.evaluate()
    assert results["segm"]["AP"] == pytest.approx(100.0)  # pycocotools on string ids
    res = results["panoptic_seg"]
    assert (res["PQ"], res["PQ_th"], res["PQ_st"]) == (100.0, 100.0, 100.0)
    assert (res["N"], res["N_th"], res["N_st"]) == (6, 2, 4)
    assert res["PQ-car"] == 100.0 and np.isnan(res["PQ-train"])
    pred_json = os.path.join(out, "panoptic_predictions.json")
    with open(pred_json) as f:
        preds = json.load(f)
    assert [a["image_id"] for a in preds["annotations"]] == ids["val"]
    assert preds["annotations"][0]["file_name"] == f"{ids['val'][0]}_gtFine_panoptic.png"
    assert {s["category_id"] for a in preds["annotations"] for s in a["segments_info"]} == {
        ROAD,
        BUILDING,
        VEGETATION,
        SKY,
        PERSON,
        CAR,
    }
    again = pq_compute(_gt_json(root, "val"), pred_json)
    assert 100 * again["All"]["pq"] == pytest.approx(res["PQ"])


# ----------------------------------------------------------------------------- training


def test_train_and_evaluate_through_the_builtin_names(cityscapes_root, tmp_path, isolated_logs):
    root, ids = cityscapes_root
    out = tmp_path / "run"
    argv = train_argv(
        out,
        NAMES["train"],
        f"('{NAMES['val']}',)",
        *("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "19", "MODEL.ROI_HEADS.NUM_CLASSES", "8"),
        *("INPUT.JSIS.FIXED_SIZE", "(32, 64)"),
        max_iter=2,
        seed=3,
    )
    assert run(argv) == 0
    assert (out / "model_final.pth").is_file()
    rows = [json.loads(line) for line in open(out / "metrics.json")]
    evals = [r for r in rows if "panoptic_seg/PQ" in r]
    assert evals and "panoptic_seg/PQ-car" in evals[-1]
    pred_json = out / "inference" / NAMES["val"] / "panoptic_predictions.json"
    with open(pred_json) as f:
        preds = json.load(f)
    assert [a["image_id"] for a in preds["annotations"]] == ids["val"]
    # the saved predictions re-evaluate with pq_compute against the Cityscapes ground truth
    again = pq_compute(_gt_json(root, "val"), str(pred_json))
    assert 100 * again["All"]["pq"] == pytest.approx(evals[-1]["panoptic_seg/PQ"], abs=1e-6)


def test_cityscapes_config_schedule_in_epochs(cityscapes_root):
    """4 training images at batch 2: 2 iterations per epoch."""
    cfg = setup_cfg(CITYSCAPES_CONFIG, ["MODEL.DEVICE", "cpu"], freeze=False)
    assert list(cfg.INPUT.JSIS.FIXED_SIZE) == [512, 1024]
    assert (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.ROI_HEADS.NUM_CLASSES) == (19, 8)
    assert resolve_epoch_schedule(cfg) == 2
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (128, (48, 88))
