"""Synthetic dataset generator: determinism, content, generator -> registration -> mapper."""

import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from jsis_d2.config import get_jsis_cfg
from jsis_d2.data import JSISDatasetMapper, LabelSpace
from jsis_d2.data.datasets.builtin import (
    default_synthetic_root,
    make_synthetic_datasets,
    register_synthetic_datasets,
)
from jsis_d2.data.panoptic_png import read_panoptic_png
from jsis_d2.data.synthetic import (
    SYNTHETIC_CATEGORIES,
    SyntheticSplitMismatch,
    generate_synthetic_dataset,
)

from detectron2.data import DatasetCatalog, MetadataCatalog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hashes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _ids(png):
    return read_panoptic_png(png)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """40 images of 96x96 (enough to see every class, crowds and occlusion)."""
    root = str(tmp_path_factory.mktemp("syn"))
    return root, generate_synthetic_dataset(root, "train", 40, 96, seed=3)


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    for r in (a, b):
        generate_synthetic_dataset(r, "val", 4, (48, 64), seed=11)
    generate_synthetic_dataset(c, "val", 4, (48, 64), seed=12)
    ha, hb, hc = _hashes(a), _hashes(b), _hashes(c)
    assert len(ha) == 4 + 4 + 1 and ha == hb
    assert all(ha[k] != hc[k] for k in ha)  # another seed: every file differs
    # images do not depend on how many are generated
    d = str(tmp_path / "d")
    generate_synthetic_dataset(d, "val", 2, (48, 64), seed=11)
    hd = _hashes(d)
    assert hd["val/images/000001.png"] == ha["val/images/000001.png"]
    assert hd["val/panoptic/000001.png"] == ha["val/panoptic/000001.png"]


def test_files_follow_coco_panoptic_format(split):
    root, paths = split
    with open(paths["panoptic_json"]) as f:
        data = json.load(f)
    assert data["categories"] == SYNTHETIC_CATEGORIES
    ls = LabelSpace(data["categories"])
    assert (ls.num_classes, ls.num_things) == (9, 4)
    assert len(data["images"]) == len(data["annotations"]) == 40
    n_crowd, thing_sizes, stuff_areas, occluded = 0, [], [], 0
    for im, ann in zip(data["images"], data["annotations"]):
        assert (im["height"], im["width"]) == (96, 96) and im["id"] == ann["image_id"]
        img = np.asarray(Image.open(os.path.join(paths["image_root"], im["file_name"])))
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        ids = _ids(os.path.join(paths["panoptic_root"], ann["file_name"]))
        present = set(np.unique(ids).tolist()) - {0}
        assert present == {s["id"] for s in ann["segments_info"]}
        for s in ann["segments_info"]:
            ys, xs = np.nonzero(ids == s["id"])
            assert s["area"] == len(xs)
            assert s["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
            isthing = s["category_id"] <= 4
            assert s["iscrowd"] in (0, 1) and (isthing or not s["iscrowd"])
            n_crowd += s["iscrowd"]
            if isthing and not s["iscrowd"]:
                thing_sizes.append(max(s["bbox"][2:]))
            elif not isthing:
                stuff_areas.append(s["area"])
        assert (ids == 0).mean() < 0.1  # void is a small fraction
        # occlusion: two different thing segments share a boundary
        thing_px = np.where((ids % 1000 > 0), ids, -1)
        for a, b in ((thing_px[1:], thing_px[:-1]), (thing_px[:, 1:], thing_px[:, :-1])):
            occluded += int(((a != b) & (a >= 0) & (b >= 0)).any())
    cats = {s["category_id"] for a in data["annotations"] for s in a["segments_info"]}
    assert cats == {c["id"] for c in SYNTHETIC_CATEGORIES}
    assert n_crowd >= 2
    assert min(thing_sizes) <= 10 and max(thing_sizes) >= 0.25 * 96
    assert np.median(stuff_areas) > 0.15 * 96 * 96
    assert occluded > 0


def test_thing_colour_does_not_decide_the_class(split):
    _, paths = split
    with open(paths["panoptic_json"]) as f:
        data = json.load(f)
    means = {c: [] for c in range(1, 5)}
    for ann in data["annotations"]:
        img = np.asarray(Image.open(os.path.join(paths["image_root"], ann["file_name"])), float)
        ids = _ids(os.path.join(paths["panoptic_root"], ann["file_name"]))
        for s in ann["segments_info"]:
            if s["category_id"] <= 4 and not s["iscrowd"] and s["area"] >= 30:
                means[s["category_id"]].append(img[ids == s["id"]].mean(0))
    for c, m in means.items():
        assert len(m) >= 5
        assert np.std(np.array(m), axis=0).min() > 30, f"class {c} has a fixed colour"


def test_generator_registration_mapper_round_trip(tmp_path):
    root = str(tmp_path / "syn")
    try:
        paths = make_synthetic_datasets(root, num_train=3, num_val=2, image_size=64, seed=0)
        md = MetadataCatalog.get("jsis_synthetic_train")
        assert md.panoptic_json == paths["train"]["panoptic_json"]
        assert md.thing_classes == ["disc", "triangle", "square", "cross"]
        train = DatasetCatalog.get("jsis_synthetic_train")
        val = DatasetCatalog.get("jsis_synthetic_val")
        assert len(train) == 3 and len(val) == 2
        cfg = get_jsis_cfg()
        cfg.INPUT.JSIS.FIXED_SIZE = [64, 64]
        cfg.INPUT.RANDOM_FLIP = "none"
        cfg.INPUT.FORMAT = "RGB"
        mapper = JSISDatasetMapper(cfg, is_train=True)
        for d in train:
            out = mapper(d)
            ids = _ids(d["pan_seg_file_name"])
            img = np.asarray(Image.open(d["file_name"]))
            assert torch.equal(out["image"], torch.from_numpy(img.transpose(2, 0, 1).copy()))
            sem = out["sem_seg"].numpy()
            for s in d["segments_info"]:
                assert (sem[ids == s["id"]] == s["category_id"]).all()
            assert (sem[ids == 0] == 255).all()
            want = [s for s in d["segments_info"] if s["isthing"] and not s["iscrowd"]]
            inst = out["instances"]
            assert inst.gt_classes.tolist() == [s["category_id"] for s in want]
            for m, s in zip(inst.gt_masks.tensor, want):
                assert torch.equal(m, torch.from_numpy(ids == s["id"]))
        # test mode, resized: pass-through for the evaluator
        cfg.INPUT.JSIS.FIXED_SIZE = [32, 48]
        out = JSISDatasetMapper(cfg, is_train=False)(val[0])
        assert out["image"].shape == (3, 32, 48) and (out["height"], out["width"]) == (64, 64)
        assert out["segments_info"] == val[0]["segments_info"]
    finally:
        register_synthetic_datasets()  # back to the default root
    assert MetadataCatalog.get("jsis_synthetic_train").image_root.startswith(
        default_synthetic_root()
    )


def test_existing_split_is_reused_or_replaced_and_foreign_folders_kept(tmp_path):
    root = str(tmp_path)
    p = generate_synthetic_dataset(root, "val", 2, 48, seed=0)
    mtime = os.path.getmtime(p["panoptic_json"])
    generate_synthetic_dataset(root, "val", 2, 48, seed=0)  # same arguments: reused
    assert os.path.getmtime(p["panoptic_json"]) == mtime
    mine = tmp_path / "val" / "images" / "my_notes.txt"
    mine.write_text("user data")
    images = tmp_path / "val" / "images"
    before = {f: (images / f).read_bytes() for f in os.listdir(images)}
    # Other arguments: nothing is deleted or changed unless asked.
    with pytest.raises(SyntheticSplitMismatch, match=r"num_images 2 on disk vs 1 asked"):
        generate_synthetic_dataset(root, "val", 1, 64, seed=0)
    after = {f: (images / f).read_bytes() for f in os.listdir(images)}
    assert after == before and os.path.getmtime(p["panoptic_json"]) == mtime
    # overwrite=True: the generator's own files are replaced, the user's file stays.
    generate_synthetic_dataset(root, "val", 1, 48, seed=1, overwrite=True)
    assert sorted(os.listdir(p["image_root"])) == ["000000.png", "my_notes.txt"]
    assert mine.read_text() == "user data"
    assert json.load(open(p["panoptic_json"]))["info"]["jsis_synthetic"]["seed"] == 1
    foreign = tmp_path / "other" / "train"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("user data")
    with pytest.raises(ValueError, match="not written by the synthetic generator"):
        generate_synthetic_dataset(str(tmp_path / "other"), "train", 1, 48)
    assert (foreign / "mine.txt").exists()
    with pytest.raises(ValueError, match="image_size"):
        generate_synthetic_dataset(root, "x", 1, 16)


def _load_cli():
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_dataset", os.path.join(REPO, "tools", "make_synthetic_dataset.py")
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_cli(tmp_path):
    cli = _load_cli()
    try:
        argv = ["--root", str(tmp_path), "--num-train", "2", "--num-val", "1", "--size", "40", "56"]
        assert cli.main(argv) == 0
    finally:
        register_synthetic_datasets()
    with open(tmp_path / "val" / "panoptic_val.json") as f:
        data = json.load(f)
    assert data["images"][0]["height"] == 40 and data["images"][0]["width"] == 56
    assert len(os.listdir(tmp_path / "train" / "images")) == 2


def test_cli_refuses_to_replace_a_split_made_with_other_arguments(tmp_path, capsys, isolated_logs):
    cli = _load_cli()
    base = ["--root", str(tmp_path), "--num-train", "2", "--num-val", "1", "--size", "40"]
    try:
        assert cli.main(base) == 0
        assert cli.main(base[:3] + ["3"] + base[4:]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "--overwrite" in err
        assert "num_images 2 on disk vs 3" in err
        assert err.count("make_synthetic_dataset: error:") == 1
        assert len(os.listdir(tmp_path / "train" / "images")) == 2
        assert cli.main(base[:3] + ["3"] + base[4:] + ["--overwrite"]) == 0
        assert len(os.listdir(tmp_path / "train" / "images")) == 3
    finally:
        register_synthetic_datasets()


def test_interrupted_generation_is_redone_by_the_next_run(tmp_path, monkeypatch):
    """Ctrl-C after two of four images: the split has images and no JSON. The next run (no
    --overwrite: the files are the generator's own) removes and redoes it; the result is
    byte-identical to an uninterrupted run."""
    import jsis_d2.data.synthetic as synthetic

    real_write, calls = synthetic.write_panoptic_png, []

    def interrupted(path, ids):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(path)
        real_write(path, ids)

    cut, whole = str(tmp_path / "cut"), str(tmp_path / "whole")
    monkeypatch.setattr(synthetic, "write_panoptic_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(cut, "val", 4, 48)
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(cut, "val", "panoptic_val.json"))
    generate_synthetic_dataset(cut, "val", 4, 48)
    generate_synthetic_dataset(whole, "val", 4, 48)
    assert _hashes(cut) == _hashes(whole) and len(_hashes(cut)) == 4 + 4 + 1


def test_overwrite_recognises_a_split_interrupted_before_the_marker(tmp_path):
    """A split cut short by an older version (images, no JSON, no marker): refused as before
    without --overwrite; with it, recognised by its file names and regenerated. A folder with
    one file of the user's is never taken for one."""
    root = str(tmp_path)
    generate_synthetic_dataset(root, "val", 3, 48)
    os.remove(os.path.join(root, "val", "panoptic_val.json"))
    with pytest.raises(ValueError, match="was not written by the synthetic generator"):
        generate_synthetic_dataset(root, "val", 3, 48)
    generate_synthetic_dataset(root, "val", 3, 48, overwrite=True)
    assert os.path.isfile(os.path.join(root, "val", "panoptic_val.json"))
    os.remove(os.path.join(root, "val", "panoptic_val.json"))
    (tmp_path / "val" / "images" / "notes.txt").write_text("the user's")
    with pytest.raises(ValueError, match="was not written by the synthetic generator"):
        generate_synthetic_dataset(root, "val", 3, 48, overwrite=True)
    assert (tmp_path / "val" / "images" / "notes.txt").read_text() == "the user's"


def test_negative_or_zero_images_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="needs num_images >= 1, got -5"):
        generate_synthetic_dataset(str(tmp_path), "train", -5, 48)
    assert not os.listdir(tmp_path)


def test_cli_negative_count_unwritable_root_and_ctrl_c_are_one_line(
    tmp_path, capsys, monkeypatch, isolated_logs
):
    import errno

    import jsis_d2.data.synthetic as synthetic
    import jsis_d2.utils.folder_lock as folder_lock

    cli = _load_cli()
    assert cli.main(["--root", str(tmp_path / "a"), "--num-train", "-5"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "make_synthetic_dataset: error: synthetic split 'train' needs num_images >= 1, got -5\n"
    )

    def denied(path, *args, **kwargs):  # as root, chmod forbids nothing: the OS's answer
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    with monkeypatch.context() as m:
        m.setattr(folder_lock.os, "makedirs", denied)
        assert cli.main(["--root", str(tmp_path / "ro"), "--num-train", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"make_synthetic_dataset: error: cannot write {tmp_path / 'ro'}: Permission denied\n"
    )

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "render_synthetic_image", interrupted)
    assert cli.main(["--root", str(tmp_path / "c"), "--num-train", "1"]) == 130
    assert "interrupted; run it again to finish" in capsys.readouterr().err
