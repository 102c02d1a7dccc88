"""The label space is keyed by category id (never by list order), ``isthing`` is 1/0 or
true/false only, datasets of one job share one label space, and no class index is the
semantic ignore value."""

import json

import pytest

from jsis_d2.config import ConfigError, get_jsis_cfg, setup_cfg
from jsis_d2.data import LabelSpace
from jsis_d2.data.datasets import register_panoptic_dataset
from jsis_d2.data.label_space import label_space_difference, parse_isthing
from jsis_d2.data.synthetic import generate_synthetic_dataset
from jsis_d2.engine import UsageError
from jsis_d2.engine.checks import check_datasets
from jsis_d2.evaluation.pq import PanopticEvalError, pq_compute

from detectron2.data import DatasetCatalog, MetadataCatalog

CATS = [
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 9, "name": "sky", "isthing": 0},
    {"id": 5, "name": "road", "isthing": 0},
]


def test_list_order_does_not_change_the_label_space():
    a, b = LabelSpace(CATS), LabelSpace(CATS[::-1])
    assert a.dataset_ids == b.dataset_ids == [1, 3, 5, 9]  # things, then stuff, by id
    assert a.names == b.names == ["person", "car", "road", "sky"]
    assert a.is_thing == [True, True, False, False]
    assert label_space_difference(a, b) == ""


def test_isthing_strings_are_refused_in_one_line():
    for value in ("1", "0", 2, None, 1.0):
        with pytest.raises(ValueError, match="'isthing' must be 1 or 0"):
            parse_isthing(value)
    assert [parse_isthing(v) for v in (1, 0, True, False)] == [True, False, True, False]
    cats = [dict(c, isthing=str(c["isthing"])) for c in CATS]
    with pytest.raises(ValueError, match=r"category 3 \('car'\): 'isthing' must be 1 or 0"):
        LabelSpace(cats)


def test_pq_refuses_string_isthing(tmp_path):
    root = str(tmp_path)
    paths = generate_synthetic_dataset(root, "val", 1, 48)
    with open(paths["panoptic_json"]) as f:
        data = json.load(f)
    for c in data["categories"]:
        c["isthing"] = str(c["isthing"])
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(data))
    with pytest.raises(PanopticEvalError, match=r"gt.json: category 1 .*'isthing' must be 1 or 0"):
        pq_compute(str(gt), str(gt), paths["panoptic_root"], paths["panoptic_root"])


@pytest.fixture
def registered():
    names = []
    yield names
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def test_a_json_listing_categories_in_another_order_loads_the_same(tmp_path, registered):
    paths = generate_synthetic_dataset(str(tmp_path), "val", 2, 48)
    with open(paths["panoptic_json"]) as f:
        data = json.load(f)
    data["categories"] = data["categories"][::-1]
    other = tmp_path / "reversed.json"
    other.write_text(json.dumps(data))
    for name, js in (("jsis_test_ls_a", paths["panoptic_json"]), ("jsis_test_ls_b", str(other))):
        register_panoptic_dataset(name, paths["image_root"], paths["panoptic_root"], js)
        registered.append(name)
    a, b = DatasetCatalog.get("jsis_test_ls_a"), DatasetCatalog.get("jsis_test_ls_b")
    assert [s["category_id"] for d in a for s in d["segments_info"]] == [
        s["category_id"] for d in b for s in d["segments_info"]
    ]
    meta_a, meta_b = MetadataCatalog.get("jsis_test_ls_a"), MetadataCatalog.get("jsis_test_ls_b")
    assert meta_a.stuff_classes == meta_b.stuff_classes
    cfg = get_jsis_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("jsis_test_ls_a",), ("jsis_test_ls_b",)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.ROI_HEADS.NUM_CLASSES = 9, 4
    check_datasets(cfg)  # one label space


def _register(name, cats, registered):
    DatasetCatalog.register(name, list)
    MetadataCatalog.get(name).set(**LabelSpace(cats).metadata())
    registered.append(name)


def test_train_and_test_label_spaces_must_match(registered):
    _register("jsis_test_ls_train", CATS, registered)
    renamed = [dict(c, name="automobile") if c["id"] == 3 else c for c in CATS]
    _register("jsis_test_ls_renamed", renamed, registered)
    cfg = get_jsis_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.ROI_HEADS.NUM_CLASSES = 4, 2
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("jsis_test_ls_train",), ("jsis_test_ls_renamed",)
    with pytest.raises(UsageError) as e:
        check_datasets(cfg)
    assert str(e.value) == (
        "DATASETS.TEST: dataset 'jsis_test_ls_renamed' has another label space than "
        "'jsis_test_ls_train' (category 3 is named 'car' in the first, 'automobile' in the "
        "second); class indices would mean different categories"
    )
    swapped = [dict(c, id={3: 9, 9: 3}.get(c["id"], c["id"])) for c in CATS]  # car <-> sky
    _register("jsis_test_ls_swapped", swapped, registered)
    cfg.DATASETS.TEST = ("jsis_test_ls_swapped",)
    with pytest.raises(UsageError, match="category 3 .* is a thing in the first, a stuff"):
        check_datasets(cfg)


def test_stuff_only_dataset_with_the_instance_branch_is_refused(registered):
    stuff = [c for c in CATS if not c["isthing"]]
    _register("jsis_test_ls_stuff", stuff, registered)
    cfg = get_jsis_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("jsis_test_ls_stuff",), ()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2, 0
    with pytest.raises(UsageError, match="has no thing class .*BRANCHES"):
        check_datasets(cfg)
    cfg.MODEL.JSIS.BRANCHES = ["semantic"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80  # not built: not compared
    check_datasets(cfg)


def test_a_class_index_equal_to_the_ignore_value_is_refused():
    with pytest.raises(ConfigError) as e:
        setup_cfg(None, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "300"])
    assert "IGNORE_VALUE=255" in str(e.value) and "NUM_CLASSES=300" in str(e.value)
    setup_cfg(None, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "255"])  # indices 0..254
    cfg = setup_cfg(
        None, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "300", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "300"]
    )
    assert cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == 300
