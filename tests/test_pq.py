"""jsis_d2.evaluation.pq: panopticapi parity, hand-computed values, bad input, CLI."""

import contextlib
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from benchmarks.pq import generate_panoptic_case
from jsis_d2.data.panoptic_png import write_panoptic_png
from jsis_d2.evaluation import pq as P
from jsis_d2.evaluation.pq import (
    MissingFileError,
    MissingPredictionError,
    PanopticEvalError,
    UnknownCategoryError,
    UnknownSegmentError,
    pq_compute,
)

CATS = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 7, "name": "sky", "isthing": 0},
    {"id": 9, "name": "road", "isthing": 0},
    {"id": 12, "name": "tree", "isthing": 0},  # never used: no GT, no prediction
]


def _segments(ids, spec):
    """segments_info for an id map; spec: {id: (category_id, iscrowd)}."""
    out = []
    for sid, (cat, crowd) in spec.items():
        area = int((ids == sid).sum())
        out.append({"id": sid, "category_id": cat, "iscrowd": crowd, "area": area})
    return out


def _write(root, name, images, categories=CATS):
    """images: list of (image_id, ids [H, W], segments_info). Returns the JSON path."""
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    anns = []
    for image_id, ids, segs in images:
        fname = f"{image_id}.png"
        write_panoptic_png(os.path.join(folder, fname), ids)
        anns.append({"image_id": image_id, "file_name": fname, "segments_info": segs})
    path = os.path.join(root, name + ".json")
    with open(path, "w") as f:
        json.dump({"annotations": anns, "categories": categories}, f)
    return path


def _reference(gt_json, pred_json, gt_folder=None, pred_folder=None):
    from panopticapi.evaluation import pq_compute as reference

    with contextlib.redirect_stdout(io.StringIO()):
        return reference(gt_json, pred_json, gt_folder, pred_folder)


def _base_gt(h=8, w=10, big=False):
    """Person (thing) on the left, car in the middle, sky top right, road bottom, void strip."""
    o = 1 << 23 if big else 0
    ids = np.zeros((h, w), dtype=np.int64)
    ids[:, : w // 3] = 11 + o
    ids[: h // 2, w // 3 :] = 21 + o
    ids[h // 2 :, w // 3 : 2 * w // 3] = 31 + o
    ids[h // 2 :, 2 * w // 3 :] = 41 + o
    ids[0, :] = 0  # void row
    spec = {11 + o: (1, 0), 21 + o: (7, 0), 31 + o: (3, 0), 41 + o: (9, 0)}
    return ids, spec


def _crowd_case(second_crowd):
    """A crowd person region; a prediction mostly on it is not a false positive. With
    ``second_crowd`` a later 1-pixel crowd person exists: panopticapi then uses only that last
    crowd segment of the category, so the prediction on the big crowd region becomes an FP."""
    gt = np.zeros((10, 10), dtype=np.int64)
    gt[:, :4] = 1  # crowd person
    gt[:, 4:7] = 2  # car
    gt[:, 7:] = 3  # sky
    gspec = {1: (1, 1), 2: (3, 0), 3: (7, 0)}
    if second_crowd:
        gt[0, 0] = 4
        gspec[4] = (1, 1)
    pred = np.zeros_like(gt)
    pred[:, :3] = 100  # person on crowd: ignored
    pred[:, 3:5] = 101  # person, half on crowd, half on car: 10/20 not > .5 -> FP
    pred[:, 5:7] = 102  # car: IoU 20 / (20 + 30 - 20) = 2/3 -> TP
    pred[:, 7:] = 103  # sky minus the last row: IoU 27/30 -> TP
    pred[9, 7:] = 104  # road where GT is sky: FP (stuff only in prediction)
    pspec = {100: (1, 0), 101: (1, 0), 102: (3, 0), 103: (7, 0), 104: (9, 0)}
    return [(1, gt, _segments(gt, gspec))], [(1, pred, _segments(pred, pspec))]


def _cases():
    """(name, gt images, pred images) covering the rules panopticapi implements."""
    cases = []
    for h, w, big in ((8, 10, False), (13, 7, True), (32, 48, False)):
        gt, spec = _base_gt(h, w, big)
        gsegs = _segments(gt, spec)
        gt_imgs = [(1, gt, gsegs)]
        cases.append((f"perfect_{h}x{w}", gt_imgs, [(1, gt, gsegs)]))
        # renumbered prediction ids, void all over the GT void row plus one pixel
        pred = np.where(gt > 0, gt + 5, 0)
        pred[1, 0] = 0
        cases.append(
            (
                f"renumbered_{h}x{w}",
                gt_imgs,
                [(1, pred, _segments(pred, {k + 5: v for k, v in spec.items()}))],
            )
        )
    # IoU just above / below 0.5: a person of 20 px, prediction covering 11 or 10 of them
    gt = np.zeros((6, 10), dtype=np.int64)
    gt[1:5, :5] = 5  # person 20 px
    gt[1:5, 5:] = 6  # road 20 px
    gspec = {5: (1, 0), 6: (9, 0)}
    for n_cover, tag in ((11, "above"), (10, "below")):
        pred = np.full(gt.shape, 60, dtype=np.int64)
        pred[0, :] = 0
        flat = pred[1:5, :5].reshape(-1)
        flat[:n_cover] = 50
        pred[1:5, :5] = flat.reshape(4, 5)
        # person pred: n_cover px inside the GT person; IoU = n / (n + 20 - n) = n / 20
        cases.append(
            (
                f"iou_{tag}",
                [(1, gt, _segments(gt, gspec))],
                [(1, pred, _segments(pred, {50: (1, 0), 60: (9, 0)}))],
            )
        )
    cases.append(("crowd", *_crowd_case(second_crowd=False)))
    cases.append(("crowd_last_wins", *_crowd_case(second_crowd=True)))
    # empty prediction (all void) and a second image with a category only in the prediction
    gt, spec = _base_gt()
    empty = np.zeros_like(gt)
    pred2 = np.where(gt > 0, 77, 0)
    gt_imgs = [(1, gt, _segments(gt, spec)), (2, gt, _segments(gt, spec))]
    cases.append(
        (
            "empty_and_pred_only",
            gt_imgs,
            [(1, empty, []), (2, pred2, _segments(pred2, {77: (12, 0)}))],
        )
    )
    return cases


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_parity_with_panopticapi_on_crafted_cases(tmp_path, case):
    _, gt_imgs, pred_imgs = case
    gt_json = _write(str(tmp_path), "gt", gt_imgs)
    pred_json = _write(str(tmp_path), "pred", pred_imgs)
    ours = pq_compute(gt_json, pred_json)
    assert ours == _reference(gt_json, pred_json)  # bit-identical, per class included


@pytest.mark.parametrize("seed", [0, 1])
def test_parity_with_panopticapi_on_generated_images(tmp_path, seed):
    gt_json, pred_json = generate_panoptic_case(
        str(tmp_path), num_images=5, size=(48 + 16 * seed, 64), segments=15, seed=seed
    )
    ours = pq_compute(gt_json, pred_json)
    ref = _reference(gt_json, pred_json)
    assert ours == ref
    assert 0.05 < ours["All"]["pq"] < 0.95  # a real mix of matches and misses


def test_rgba_pngs_with_varying_alpha_give_the_rgb_results(tmp_path):
    """pq_compute reads raw 4-byte pixels and masks the id bits of its runs: an alpha channel
    that changes inside segments (more runs, other high bytes) must not change a number."""
    gt_json, pred_json = generate_panoptic_case(
        str(tmp_path), num_images=3, size=(40, 56), segments=12, seed=3
    )
    ref = pq_compute(gt_json, pred_json)
    rng = np.random.default_rng(0)
    for folder in ("gt", "pred"):
        for name in os.listdir(tmp_path / folder):
            path = tmp_path / folder / name
            rgb = np.asarray(Image.open(path).convert("RGB"))
            alpha = rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)
            Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    assert Image.open(path).mode == "RGBA"
    assert pq_compute(gt_json, pred_json) == ref


def test_ground_truth_against_itself_is_exactly_100(tmp_path):
    gt_json, _ = generate_panoptic_case(str(tmp_path), num_images=3, size=(40, 50), segments=12)
    r = pq_compute(gt_json, gt_json)
    for group in ("All", "Things", "Stuff"):
        assert (r[group]["pq"], r[group]["sq"], r[group]["rq"]) == (1.0, 1.0, 1.0)
        assert r[group]["n"] > 0


def test_hand_computed_values(tmp_path):
    """Crowd case by hand: person: 0 TP, 1 FP (pred 101: 10 of 20 px on crowd, not > .5);
    pred 100 on crowd is ignored. car: TP IoU 20/30. sky: TP IoU 27/30 (3 px lost to road).
    road: 1 FP (only predicted). tree: nothing."""
    name, gt_imgs, pred_imgs = [c for c in _cases() if c[0] == "crowd"][0]
    r = pq_compute(_write(str(tmp_path), "gt", gt_imgs), _write(str(tmp_path), "pred", pred_imgs))
    pc = r["per_class"]
    assert pc[1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # 0 TP, 1 FP
    assert pc[3]["sq"] == pytest.approx(20 / 30) and pc[3]["rq"] == 1.0
    assert pc[7]["sq"] == pytest.approx(27 / 30) and pc[7]["pq"] == pytest.approx(27 / 30)
    assert pc[9] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert pc[12] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}  # no GT, no prediction: not averaged
    assert r["All"]["n"] == 4 and r["Things"]["n"] == 2 and r["Stuff"]["n"] == 2
    assert r["All"]["pq"] == pytest.approx((0 + 20 / 30 + 27 / 30 + 0) / 4)


def test_group_without_any_category_is_zero_not_a_division_by_zero(tmp_path):
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[1:, 1:] = 3
    imgs = [(1, gt, _segments(gt, {3: (1, 0)}))]  # only a thing: Stuff has n = 0
    path = _write(str(tmp_path), "gt", imgs)
    r = pq_compute(path, path)
    assert r["Stuff"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert r["Things"]["pq"] == 1.0


def test_default_folders_and_explicit_folders(tmp_path):
    gt, spec = _base_gt()
    imgs = [(1, gt, _segments(gt, spec))]
    gt_json = _write(str(tmp_path), "gt", imgs)
    pred_json = _write(str(tmp_path), "pred", imgs)
    moved = str(tmp_path / "elsewhere")
    os.rename(str(tmp_path / "pred"), moved)
    with pytest.raises(MissingFileError, match="pred"):
        pq_compute(gt_json, pred_json)
    r = pq_compute(gt_json, pred_json, pred_folder=moved)
    assert r == _reference(gt_json, pred_json, pred_folder=moved)


def test_large_ids_and_many_segments(tmp_path):
    """Ids near 2**24 and 400 segments in one image."""
    rng = np.random.default_rng(3)
    ids = rng.choice(np.arange(1, 1 << 24), size=400, replace=False)
    ids[0] = (1 << 24) - 1
    gt = np.repeat(ids, 4).reshape(40, 40)
    spec = {int(i): ((1, 3, 7, 9)[k % 4], 0) for k, i in enumerate(ids)}
    pred = gt.copy()
    pred[:, :2] = ids[0]  # steal pixels: some IoUs drop
    gt_json = _write(str(tmp_path), "gt", [(1, gt, _segments(gt, spec))])
    pspec = {k: v for k, v in spec.items() if (pred == k).any()}
    pred_json = _write(str(tmp_path), "pred", [(1, pred, _segments(pred, pspec))])
    assert pq_compute(gt_json, pred_json) == _reference(gt_json, pred_json)


# ------------------------------------------------------------------------- bad input


@pytest.fixture
def good_case(tmp_path):
    gt, spec = _base_gt()
    segs = _segments(gt, spec)
    gt_json = _write(str(tmp_path), "gt", [(1, gt, segs), (2, gt, segs)])
    return tmp_path, gt, segs, gt_json


def _pred(tmp_path, images):
    return _write(str(tmp_path), "pred", images)


def test_error_missing_prediction(good_case):
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs)])
    with pytest.raises(MissingPredictionError, match=r"image with id 2 .*2\.png"):
        pq_compute(gt_json, pred_json)


def test_error_missing_png(good_case):
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, segs)])
    os.remove(str(tmp / "pred" / "2.png"))
    with pytest.raises(MissingFileError, match=r"image 2.*pred/2\.png"):
        pq_compute(gt_json, pred_json)
    with pytest.raises(FileNotFoundError):
        pq_compute(gt_json, pred_json)


@pytest.mark.parametrize("content", ["gray", "garbage"])
def test_error_unreadable_png(good_case, content):
    """The codec's errors reach pq_compute's callers as PanopticEvalError naming the file."""
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, segs)])
    path = str(tmp / "pred" / "2.png")
    if content == "gray":
        Image.fromarray(np.zeros(gt.shape, np.uint8)).save(path)
    else:
        with open(path, "wb") as f:
            f.write(b"not a png")
    words = "mode 'L'" if content == "gray" else "cannot read panoptic PNG"
    with pytest.raises(PanopticEvalError, match=r"^image 2: ") as e:
        pq_compute(gt_json, pred_json)
    assert words in str(e.value) and path in str(e.value) and "\n" not in str(e.value)
    assert P.main([gt_json, pred_json]) == 2


def test_error_missing_ground_truth_png_in_threads(good_case):
    """Serial or in the decoding threads, errors keep their order."""
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, segs)])
    os.remove(str(tmp / "gt" / "2.png"))
    for threads in (1, 2):
        with pytest.raises(MissingFileError, match=r"image 2.*gt/2\.png"):
            P.compute_pq_stats(gt_json, pred_json, num_threads=threads)
    # a missing prediction is reported first, as before, though the PNG error is already known
    only_first = _pred(tmp, [(1, gt, segs)])
    with pytest.raises(MissingPredictionError, match="image with id 2"):
        P.compute_pq_stats(gt_json, only_first, num_threads=2)


def test_error_unknown_category(good_case):
    tmp, gt, segs, gt_json = good_case
    bad = [dict(s) for s in segs]
    bad[1]["category_id"] = 99
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, bad)])
    with pytest.raises(UnknownCategoryError, match=r"image 2.*segment 21 .*category_id 99"):
        pq_compute(gt_json, pred_json)


def test_error_duplicate_segment_ids(good_case):
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs + [dict(segs[0])]), (2, gt, segs)])
    with pytest.raises(PanopticEvalError, match=r"image 1.*duplicate segment id\(s\) \[11\]"):
        pq_compute(gt_json, pred_json)


def test_error_png_id_not_in_segments_info(good_case):
    tmp, gt, segs, gt_json = good_case
    pred = gt.copy()
    pred[5, 5] = 999
    pred_json = _pred(tmp, [(1, gt, segs), (2, pred, segs)])
    with pytest.raises(UnknownSegmentError, match=r"image 2.*\[999\].*not in segments_info"):
        pq_compute(gt_json, pred_json)


def test_error_segments_info_id_not_in_png(good_case):
    tmp, gt, segs, gt_json = good_case
    extra = segs + [{"id": 555, "category_id": 3}]
    pred_json = _pred(tmp, [(1, gt, extra), (2, gt, segs)])
    with pytest.raises(UnknownSegmentError, match=r"image 1.*\[555\].*not present in the PNG"):
        pq_compute(gt_json, pred_json)


def test_error_size_mismatch(good_case):
    tmp, gt, segs, gt_json = good_case
    pred = np.concatenate([gt, gt[:1]], axis=0)
    pred_json = _pred(
        tmp,
        [
            (1, gt, segs),
            (2, pred, _segments(pred, {11: (1, 0), 21: (7, 0), 31: (3, 0), 41: (9, 0)})),
        ],
    )
    with pytest.raises(PanopticEvalError, match=r"image 2.*10x8 .*prediction is 10x9"):
        pq_compute(gt_json, pred_json)


def test_cli_prints_table_and_per_class(good_case, capsys):
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, segs)])
    assert P.main([gt_json, pred_json, "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "All       | 100.0  100.0  100.0     4" in out
    assert "Stuff     | 100.0  100.0  100.0     2" in out
    assert "person" in out and "tree" in out
    os.remove(str(tmp / "pred" / "1.png"))
    assert P.main([gt_json, pred_json]) == 2
    assert "1.png" in capsys.readouterr().err


# ----------------------------------------------------------- bad input found by probing (issue 16)


def _rewrite(path, mutate):
    with open(path) as f:
        data = json.load(f)
    mutate(data)
    with open(path, "w") as f:
        json.dump(data, f)


@pytest.mark.parametrize("which", ["gt", "pred"])
def test_error_duplicate_image_ids_and_file_names(good_case, which):
    """Two annotations for one image id, or two images reading one PNG: refused, not scored."""
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, segs)])
    path = gt_json if which == "gt" else pred_json

    def same_id(d):
        d["annotations"][1]["image_id"] = 1

    _rewrite(path, same_id)
    with pytest.raises(PanopticEvalError, match=rf"{which}\.json.*image_id 1 .*2 annotations"):
        pq_compute(gt_json, pred_json)
    _rewrite(path, lambda d: d["annotations"][1].update(image_id=2, file_name="1.png"))
    with pytest.raises(PanopticEvalError, match=rf"{which}\.json.*PNG 1\.png .*image_id 1 and 2"):
        pq_compute(gt_json, pred_json)


def test_ground_truth_area_that_disagrees_with_the_png(good_case, caplog):
    """PQ uses the PNG's pixel counts (never inf) and says which area disagreed."""
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, segs)])
    exact = pq_compute(gt_json, pred_json)
    assert exact == _reference(gt_json, pred_json)  # consistent files: panopticapi's numbers
    area_31 = segs[2]["area"]
    assert segs[2]["id"] == 31 and area_31 > 0
    _rewrite(gt_json, lambda d: d["annotations"][1]["segments_info"][2].update(area=0))
    with caplog.at_level("WARNING", logger="jsis_d2.evaluation.pq"):
        r = pq_compute(gt_json, pred_json)
    assert r == exact  # panopticapi: inf for this class
    assert np.isfinite(_flat(r)).all()
    msg = " ".join(rec.getMessage() for rec in caplog.records)
    assert re.search(
        rf"1 segment\(s\) in 1 image\(s\).*image 2.*gt/2\.png.*segment 31: "
        rf"area 0 in the JSON, {area_31} pixels in the PNG",
        msg,
    ), msg


def _flat(r):
    return [v for g in ("All", "Things", "Stuff") for k, v in r[g].items() if k != "n"] + [
        v for c in r["per_class"].values() for v in c.values()
    ]


def test_categories_without_isthing_are_refused(good_case, capsys):
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, segs)])
    _rewrite(gt_json, lambda d: d["categories"][1].pop("isthing"))
    with pytest.raises(PanopticEvalError, match=r"gt\.json: category 3 \('car'\) has no 'isthing'"):
        pq_compute(gt_json, pred_json)
    assert P.main([gt_json, pred_json]) == 2
    err = capsys.readouterr().err
    assert "category 3 ('car') has no 'isthing'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("which", ["gt", "pred"])
@pytest.mark.parametrize(
    "breakage, pattern",
    [
        (lambda d: d["annotations"][1].pop("segments_info"), r"image_id 2 .*'segments_info'"),
        (
            lambda d: d.update(annotations={"1": d["annotations"][0]}),
            r"'annotations' must be a list",
        ),
        (lambda d: d["annotations"].__setitem__(1, "2.png"), r"annotation #1 .*'2\.png'.*object"),
        (lambda d: d["annotations"][0].pop("file_name"), r"image_id 1 .*'file_name'"),
    ],
    ids=["no_segments_info", "dict_not_list", "string_annotation", "no_file_name"],
)
def test_malformed_annotations_name_the_file(good_case, which, breakage, pattern, capsys):
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, segs)])
    path = gt_json if which == "gt" else pred_json
    _rewrite(path, breakage)
    with pytest.raises(PanopticEvalError, match=rf"{which}\.json: .*{pattern}"):
        pq_compute(gt_json, pred_json)
    assert P.main([gt_json, pred_json]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_per_class_marks_absent_classes_like_the_evaluator(good_case, capsys):
    """tree (id 12) is in neither ground truth nor prediction: not counted, shown as n/a."""
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, segs)])
    assert P.main([gt_json, pred_json, "--per-class"]) == 0
    lines = {
        ln.split()[1]: ln
        for ln in capsys.readouterr().out.splitlines()
        if ln.split()[:1] in (["1"], ["3"], ["7"], ["9"], ["12"])
    }
    assert lines["tree"].split()[2:] == ["n/a", "n/a", "n/a"]
    assert lines["sky"].split()[2:] == ["100.0", "100.0", "100.0"]
    assert pq_compute(gt_json, pred_json)["per_class"][12] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}


def test_ground_truth_area_that_is_not_a_number_does_not_matter(good_case):
    tmp, gt, segs, gt_json = good_case
    pred_json = _pred(tmp, [(1, gt, segs), (2, gt, segs)])
    exact = pq_compute(gt_json, pred_json)
    _rewrite(gt_json, lambda d: d["annotations"][0]["segments_info"][0].update(area="big"))
    assert pq_compute(gt_json, pred_json) == exact


def test_cli_non_utf8_file_or_folder_is_one_line(tmp_path, capsys):
    from jsis_d2.evaluation.pq import main

    bad = tmp_path / "latin1.json"
    bad.write_bytes('{"annotations": [], "name": "caf\xe9"}'.encode("latin-1"))
    assert main([str(bad), str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"error: ground-truth JSON {bad} is not UTF-8 text (invalid continuation byte)\n"
    )
    assert main([str(tmp_path), str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"error: ground-truth JSON {tmp_path} is a folder, not a JSON file\n"
    )
