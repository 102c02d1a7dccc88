"""Training data with DATALOADER.SKIP_BAD_SAMPLES: images dropped at load, every sample bad."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from jsis_d2.config import get_jsis_cfg
from jsis_d2.data import BadSampleError, JSISDatasetMapper
from jsis_d2.data.build import train_dataset_dicts
from jsis_d2.data.datasets import register_panoptic_dataset
from jsis_d2.data.panoptic_png import write_panoptic_png
from jsis_d2.engine.schedule import resolve_epoch_schedule
from jsis_d2.engine.trainer import Trainer

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.common import MapDataset

CATS = [{"id": 7, "name": "tree", "isthing": 0}, {"id": 3, "name": "car", "isthing": 1}]


@pytest.fixture
def dataset(tmp_path):
    """Register a 3-image dataset; ``make(bad_category=(...), missing_png=(...))`` writes it."""
    names = []

    def make(bad_category=(), missing_png=()):
        name = f"jsis_test_build_{len(names)}"
        root = tmp_path / name
        (root / "img").mkdir(parents=True)
        (root / "pan").mkdir()
        images, anns = [], []
        for i in range(3):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "img" / f"{i}.jpg")
            ids = np.full((8, 8), 70, np.int64)
            ids[2:4, 2:5] = 31
            if i not in missing_png:
                write_panoptic_png(str(root / "pan" / f"{i}.png"), ids)
            images.append({"id": i, "file_name": f"{i}.jpg", "height": 8, "width": 8})
            anns.append(
                {
                    "image_id": i,
                    "file_name": f"{i}.png",
                    "segments_info": [
                        {"id": 70, "category_id": 7, "iscrowd": 0},
                        {"id": 31, "category_id": 99 if i in bad_category else 3, "iscrowd": 0},
                    ],
                }
            )
        js = root / "pan.json"
        js.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
        register_panoptic_dataset(name, str(root / "img"), str(root / "pan"), str(js), CATS)
        names.append(name)
        return name, str(js)

    yield make
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def _cfg(name, skip=True):
    cfg = get_jsis_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATALOADER.SKIP_BAD_SAMPLES = skip
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 1
    cfg.INPUT.JSIS.FIXED_SIZE = [8, 8]
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    return cfg


def test_unknown_category_ids_skip_the_image_with_skip_bad_samples(dataset, caplog):
    """SKIP_BAD_SAMPLES skips images with unknown category ids (counted, named)."""
    name, js = dataset(bad_category=(1,))
    with pytest.raises(ValueError, match=r"pan\.json: segment 31 of .*1\.png has unknown category"):
        train_dataset_dicts(_cfg(name, skip=False))  # without: the whole dataset is refused
    with caplog.at_level(logging.WARNING, logger="jsis_d2.data.datasets.panoptic"):
        dicts = train_dataset_dicts(_cfg(name))
    assert [d["image_id"] for d in dicts] == [0, 2]
    assert "1.png has unknown category id 99" in caplog.text
    assert f"Skipped 1 of 3 images of {js} with unknown category ids" in caplog.text
    # the epoch schedule counts the images that are trained on
    cfg = _cfg(name)
    cfg.SOLVER.EPOCHS, cfg.SOLVER.STEPS_EPOCHS = 2, [1]
    assert resolve_epoch_schedule(cfg) == 2 and cfg.SOLVER.MAX_ITER == 4
    batch = next(iter(Trainer.build_train_loader(cfg)))
    assert batch[0]["image_id"] in (0, 2)
    # evaluation never skips: the registered loader still refuses the dataset
    with pytest.raises(ValueError, match="unknown category id 99"):
        DatasetCatalog.get(name)


def test_every_image_with_unknown_category_ids_is_one_clear_error(dataset):
    name, js = dataset(bad_category=(0, 1, 2))
    with pytest.raises(BadSampleError, match=rf"no usable training sample in {name}: all 3 images"):
        train_dataset_dicts(_cfg(name))


def test_every_sample_bad_is_one_clear_error_not_sample_larger_than_population(dataset):
    """detectron2's MapDataset retry would fail in random.sample once no candidate is left."""
    name, js = dataset(missing_png=(0, 1, 2))
    loader = Trainer.build_train_loader(_cfg(name))
    with pytest.raises(BadSampleError) as e:
        next(iter(loader))
    msg = str(e.value)
    assert f"no usable training sample in {name}: all 3 samples are bad" in msg
    assert "panoptic PNG not found" in msg and "\n" not in msg


def test_some_samples_bad_keeps_training_on_the_good_ones(dataset):
    name, js = dataset(missing_png=(0, 2))
    it = iter(Trainer.build_train_loader(_cfg(name)))
    assert {next(it)[0]["image_id"] for _ in range(6)} == {1}


def test_mapper_counts_distinct_bad_samples(tmp_path):
    """With num_samples the mapper raises once every distinct sample failed, not before."""
    mapper = JSISDatasetMapper(
        True, augmentations=[], skip_bad_samples=True, num_samples=2, dataset_names=("my_set",)
    )
    bad = [
        {
            "file_name": str(tmp_path / f"{i}.jpg"),
            "image_id": i,
            "pan_seg_file_name": "x",
            "segments_info": [],
        }
        for i in range(2)
    ]
    assert mapper(bad[0]) is None and mapper(bad[0]) is None  # the same one twice
    with pytest.raises(BadSampleError, match="no usable training sample in my_set: all 2"):
        MapDataset(bad, mapper)[1]
