"""Panoptic quality (PQ, SQ, RQ): the same rules and numbers as panopticapi, vectorized.

:func:`pq_compute` has the signature and returns the result dict of
``panopticapi.evaluation.pq_compute``::

    {"All": {"pq", "sq", "rq", "n"}, "Things": {...}, "Stuff": {...},
     "per_class": {dataset_category_id: {"pq", "sq", "rq"}}}

(fractions in [0, 1], not percent). The rules reproduced from panopticapi:

- Segment ids come from the PNG colors, ``id = R + 256 * G + 256**2 * B``; id 0 (``VOID``)
  is void (the codec: :mod:`jsis_d2.data.panoptic_png`). Ground-truth segments with
  ``iscrowd == 1`` are crowd regions: never matched, never false negatives.
- A ground-truth segment ``g`` (not crowd) and a predicted segment ``p`` of the same category
  match when ``IoU > 0.5`` where ``IoU = |g & p| / (|p| + |g| - |g & p| - |p & void|)``: the
  prediction's pixels on ground-truth void are left out of the union. ``|g|`` and ``|p|`` are
  PNG pixel counts. (panopticapi takes ``|g|`` from the ground truth's JSON ``area``: the same
  number on consistent files. Where the JSON disagrees with the PNG, e.g. ``area: 0``,
  panopticapi's IoU can exceed 1 or be inf; here the PNG wins and one warning names the file,
  segment and both areas.)
- Each unmatched non-crowd ground-truth segment is a false negative. An unmatched predicted
  segment is a false positive unless more than half of it lies on void plus the crowd region of
  its category (the last crowd segment of that category in ``segments_info``, as panopticapi).
- Per category ``PQ = sum(IoU of matches) / (TP + FP/2 + FN/2)``, ``SQ = sum(IoU) / TP``,
  ``RQ = TP / (TP + FP/2 + FN/2)``. Categories with ``TP + FP + FN == 0`` get 0 in
  ``per_class`` (panopticapi's dict) and are left out of the averages (``n`` counts the
  others); the command line's ``--per-class`` shows them as ``n/a`` (the evaluator: NaN).
- Matched IoUs are summed in panopticapi's order (images split into ``cpu_count()`` chunks as
  its process pool does), so on the same machine the numbers are bit-identical.

Differences, all on input panopticapi cannot evaluate: a group without any category with
TP/FP/FN gets pq/sq/rq 0.0 and ``n = 0`` (panopticapi divides by zero); bad input (see each
function's Raises; in either JSON also an image id or PNG with several annotations, a
malformed annotation, a category without ``id`` or ``isthing``) raises a
:class:`PanopticEvalError` (a ``ValueError``; its subclasses also ``KeyError`` /
``FileNotFoundError``) naming the image, file and ids; the command line prints it as one line,
exit code 2.

Speed: no process pool. PNGs are decoded with Pillow (panopticapi's decoder) in a small thread
pool (Pillow releases the GIL), and each image pair is reduced to runs of equal (ground-truth
id, predicted id) along the raster order, so the joint histogram costs a few vectorized passes
over the pixels instead of a sort.

Array legend: ``H, W`` image size; ``Ng``/``Np`` ground-truth / predicted segments of one
image; ``C`` categories (category *index* = position in the category list).

Command line::

    python -m jsis_d2.evaluation.pq GT_JSON PRED_JSON [--gt-folder D] [--pred-folder D]
        [--per-class] [--threads N]
"""

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from ..data.ids import IdIndex
from ..data.label_space import parse_isthing
from ..data.panoptic_format import check_annotations
from ..data.panoptic_png import ID_LIMIT, VOID, PanopticPNGError, read_panoptic_png

__all__ = [
    "GROUPS",
    "PanopticEvalError",
    "MissingPredictionError",
    "MissingFileError",
    "UnknownSegmentError",
    "UnknownCategoryError",
    "SegmentTable",
    "ImagePQStats",
    "PQStats",
    "segment_table",
    "read_segment_ids",
    "check_size",
    "joint_histogram",
    "image_pq_stats",
    "log_area_mismatches",
    "compute_pq_stats",
    "pq_compute",
    "format_pq_table",
    "main",
]

logger = logging.getLogger(__name__)

#: Matching threshold: a ground-truth and a predicted segment match when IoU is above it.
MATCH_IOU = 0.5
#: An unmatched prediction more than this fraction on void + crowd is not a false positive.
IGNORE_FRACTION = 0.5
#: The groups: panopticapi's name, Detectron2's key suffix, categories (None: all, True: things)
GROUPS = (("All", "", None), ("Things", "_th", True), ("Stuff", "_st", False))


class PanopticEvalError(ValueError):
    """Bad panoptic input; the message names the image, file and ids."""

    def __str__(self):  # KeyError subclasses would otherwise print the message quoted
        return str(self.args[0]) if self.args else ""


class MissingPredictionError(PanopticEvalError, KeyError):
    """A ground-truth image has no prediction."""


class MissingFileError(PanopticEvalError, FileNotFoundError):
    """A PNG file or a segmentation folder does not exist."""


class UnknownSegmentError(PanopticEvalError, KeyError):
    """A segment id is in a PNG but not in ``segments_info``, or the reverse."""


class UnknownCategoryError(PanopticEvalError, KeyError):
    """A segment has a category id that is not in the category list."""


# ----------------------------------------------------------------------------- segments


class SegmentTable(NamedTuple):
    """One image's segments, sorted by id (arrays of length N).

    ids: int64 segment ids (> 0), ascending. cats: int64 category indices in [0, C).
    iscrowd: bool. area: int64 JSON areas, or None (only compared with the PNG's pixel counts,
    which PQ uses).
    crowd_row_of_cat: category index -> row of the LAST crowd segment of that category in the
    original ``segments_info`` order (panopticapi's rule for false positives on crowd).
    index: :class:`IdIndex` of the ids (with void as row 0).
    """

    ids: np.ndarray
    cats: np.ndarray
    iscrowd: np.ndarray
    area: Optional[np.ndarray]
    crowd_row_of_cat: Dict[int, int]
    index: IdIndex


def segment_table(
    segments_info: Sequence[Dict], cat_index: Dict[int, int], where: str, use_area: bool = False
) -> SegmentTable:
    """Validate ``segments_info`` (dicts with ``id``, ``category_id`` and, ground truth,
    ``iscrowd`` / ``area``) into a :class:`SegmentTable`.

    Args:
        cat_index: category id as it appears in ``segments_info`` -> category index.
        where: names the image and file in error messages.
        use_area: keep ``area`` when every segment has an integer one (ground truth: checked
            against the PNG, see :func:`log_area_mismatches`).
    Raises:
        PanopticEvalError for a missing key, a segment id out of [1, 2**24) or duplicate ids;
        UnknownCategoryError for a category id not in ``cat_index``.
    """
    segs = segments_info
    try:
        ids = np.array([s["id"] for s in segs], dtype=np.int64)
        cats = np.array([cat_index.get(s["category_id"], -1) for s in segs], dtype=np.int64)
    except (KeyError, TypeError, ValueError, OverflowError):
        _explain_bad_segment(segs, cat_index, where)
        raise
    if (cats < 0).any():
        _explain_bad_segment(segs, cat_index, where)
    bad = ids[(ids <= VOID) | (ids >= ID_LIMIT)]
    if len(bad):
        raise PanopticEvalError(
            f"{where}: segment id(s) {bad.tolist()} out of range (1 .. 2**24-1; {VOID} is void)"
        )
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    dup = ids[1:][ids[1:] == ids[:-1]]
    if len(dup):
        raise PanopticEvalError(
            f"{where}: duplicate segment id(s) {np.unique(dup).tolist()} in segments_info"
        )
    area = None
    if use_area and all(s.get("area") is not None for s in segs):
        try:
            area = np.array([s["area"] for s in segs], dtype=np.int64)[order]
        except (TypeError, ValueError, OverflowError):
            pass  # unusable, and PQ uses the PNG's pixel counts anyway
    iscrowd = np.array([s.get("iscrowd", 0) == 1 for s in segs], dtype=bool)
    rank = np.argsort(order)  # JSON position -> row; in JSON order the last crowd one wins
    crowd_row_of_cat = {int(cats[i]): int(rank[i]) for i in np.flatnonzero(iscrowd)}
    return SegmentTable(ids, cats[order], iscrowd[order], area, crowd_row_of_cat, IdIndex(ids))


def _explain_bad_segment(segs, cat_index, where):
    """Raise the precise error for the first malformed segment of ``segs``."""
    for i, s in enumerate(segs):
        if not isinstance(s, dict) or "id" not in s or "category_id" not in s:
            raise PanopticEvalError(
                f"{where}: segment #{i} ({s!r}) must be a dict with 'id' and 'category_id'"
            )
        try:
            int(s["id"])
        except (TypeError, ValueError):
            raise PanopticEvalError(
                f"{where}: segment #{i} has a non-integer id {s['id']!r}"
            ) from None
        cid = s["category_id"]
        try:
            known = cid in cat_index
        except TypeError:
            known = False
        if not known:
            raise UnknownCategoryError(
                f"{where}: segment {s['id']} has unknown category_id {cid!r} "
                f"(known: {sorted(cat_index)[:20]}{' ...' if len(cat_index) > 20 else ''})"
            )


def read_segment_ids(path: str, where: str, raw: bool = False) -> np.ndarray:
    """Segment ids uint32 [H, W] of a panoptic PNG (``raw``: unmasked, see
    :func:`~jsis_d2.data.panoptic_png.read_panoptic_png`); the codec's errors as
    PanopticEvalError."""
    try:
        return read_panoptic_png(path, where, raw=raw)
    except FileNotFoundError as e:
        raise MissingFileError(str(e)) from None
    except PanopticPNGError as e:
        raise PanopticEvalError(str(e)) from e


def check_size(where: str, what: str, shape, gt_shape) -> None:
    """PanopticEvalError unless ``shape`` (trailing dims H, W) is the ground truth's (H, W)."""
    if tuple(shape) != tuple(gt_shape):
        raise PanopticEvalError(
            f"{where}: ground truth is {gt_shape[-1]}x{gt_shape[-2]} (WxH) but the {what} is "
            f"{shape[-1]}x{shape[-2]}"
        )


# ----------------------------------------------------------------------------- counting


def joint_histogram(
    a: np.ndarray,
    a_index: IdIndex,
    b: np.ndarray,
    b_index: IdIndex,
    a_name: str,
    b_name: str,
    id_mask: Optional[int] = None,
) -> np.ndarray:
    """Pixel counts of every (a label, b label) pair of two label maps of the same size.

    Args:
        a, b: integer label maps (any shape, same number of pixels).
        a_index, b_index: :class:`IdIndex` of every label allowed in ``a`` / ``b``, in the
            order of the histogram's rows / columns (``Na`` / ``Nb`` ids).
        a_name, b_name: name the maps in the error message.
        id_mask: if given, labels are ``value & id_mask`` (raw PNG words, whose high byte is
            not part of the id; see :func:`read_segment_ids`).
    Returns:
        int64 [Na, Nb]: ``out[i, j] = #{pixels with a == a_index.ids[i], b == b_index.ids[j]}``.
    Raises:
        UnknownSegmentError listing the labels of ``a`` (or ``b``) not in its index.
    """
    # Runs of equal (a, b) along the raster order: about the number of segment boundaries
    # crossed by the rows, far below H*W on segmentation maps.
    a = a.reshape(-1)
    b = b.reshape(-1)
    na, nb = len(a_index.ids), len(b_index.ids)
    if a.size == 0:
        return np.zeros((na, nb), dtype=np.int64)
    change = np.not_equal(a[1:], a[:-1])
    change |= np.not_equal(b[1:], b[:-1])
    starts = np.flatnonzero(change)
    starts += 1
    starts = np.concatenate((np.zeros(1, dtype=starts.dtype), starts))
    lengths = np.diff(starts, append=a.size)
    av, bv = a[starts], b[starts]
    if id_mask is not None:  # runs split at every raw change, so each run has one label
        av &= id_mask
        bv &= id_mask
    ai, a_bad = a_index.find(av)
    bi, b_bad = b_index.find(bv)
    for bad, vals, name in ((a_bad, av, a_name), (b_bad, bv, b_name)):
        if bad.any():
            unknown = np.unique(vals[bad]).tolist()
            raise UnknownSegmentError(
                f"{name}: segment id(s) {unknown[:20]} present in the PNG/map but not in "
                "segments_info"
            )
    key = ai * nb
    key += bi
    counts = np.bincount(key, weights=lengths, minlength=na * nb)
    return counts.astype(np.int64).reshape(na, nb)


class ImagePQStats(NamedTuple):
    """PQ statistics of one image (category indices in [0, C)).

    match_cat / match_iou: category and IoU (float64) of each match, in panopticapi's order
    (ascending ground-truth id, then predicted id). fp_cat / fn_cat: category of each false
    positive / false negative.
    """

    match_cat: np.ndarray
    match_iou: np.ndarray
    fp_cat: np.ndarray
    fn_cat: np.ndarray
    #: ground-truth segments whose JSON ``area`` differs from the PNG: (where, int64 [M, 3] of
    #: segment id, JSON area, PNG pixel count), or None. See :func:`log_area_mismatches`.
    area_mismatch: Optional[tuple] = None


def image_pq_stats(
    gt_ids: np.ndarray,
    gt: SegmentTable,
    pred_ids: np.ndarray,
    pred: SegmentTable,
    where: str,
    gt_name: str,
    pred_name: str,
    id_mask: Optional[int] = None,
) -> ImagePQStats:
    """Match the segments of one image (panopticapi's rules, see the module docstring).

    Args:
        gt_ids, pred_ids: integer id maps [H, W] (0 = void), same shape.
        gt, pred: their :class:`SegmentTable`; category indices in the same space.
        where: names the image/files in error messages; gt_name, pred_name: each map in
            unknown-segment errors.
        id_mask: see :func:`joint_histogram` (raw PNG words).
    Raises:
        PanopticEvalError on size mismatch; UnknownSegmentError when a map holds an id missing
        from its table or a table lists an id absent from its map.
    """
    check_size(where, "prediction", pred_ids.shape, gt_ids.shape)
    # [Ng + 1, Np + 1] pixel counts; row/column 0 = void, then the segments by ascending id
    hist = joint_histogram(gt_ids, gt.index, pred_ids, pred.index, gt_name, pred_name, id_mask)
    pred_area = hist[:, 1:].sum(0)
    gt_area = hist[1:, :].sum(1)  # the PNG's pixel counts, used for PQ
    for area, table, name in ((pred_area, pred, "prediction"), (gt_area, gt, "ground truth")):
        absent = area == 0
        if absent.any():
            raise UnknownSegmentError(
                f"{where} ({name}): segment id(s) {table.ids[absent].tolist()[:20]} listed in "
                "segments_info but not present in the PNG/map"
            )
    mismatch = None
    if gt.area is not None and (gt.area != gt_area).any():
        bad = gt.area != gt_area
        mismatch = (where, np.stack([gt.ids[bad], gt.area[bad], gt_area[bad]], axis=1))
    inter = hist[1:, 1:]  # [Ng, Np]
    void_p = hist[0, 1:]  # [Np] predicted pixels on ground-truth void

    cand = inter > 0
    cand &= gt.cats[:, None] == pred.cats[None, :]
    if gt.iscrowd.any():
        cand &= ~gt.iscrowd[:, None]
    gi, pi = np.nonzero(cand)  # row-major: ascending (gt id, pred id), as panopticapi
    i = inter[gi, pi]
    iou = i / (pred_area[pi] + gt_area[gi] - i - void_p[pi])
    ok = iou > MATCH_IOU
    gi, pi, iou = gi[ok], pi[ok], iou[ok]
    gt_unmatched = ~gt.iscrowd
    gt_unmatched[gi] = False
    pred_unmatched = np.ones(len(pred.ids), dtype=bool)
    pred_unmatched[pi] = False

    ignored = void_p.copy()
    if gt.crowd_row_of_cat:
        for j in np.flatnonzero(pred_unmatched).tolist():
            row = gt.crowd_row_of_cat.get(int(pred.cats[j]))
            if row is not None:
                ignored[j] += inter[row, j]
    fp = pred_unmatched & ~(ignored / pred_area > IGNORE_FRACTION)
    return ImagePQStats(gt.cats[gi], iou, pred.cats[fp], gt.cats[gt_unmatched], mismatch)


def log_area_mismatches(mismatches: Sequence[Optional[tuple]]) -> None:
    """One warning for the ground-truth ``area`` values that disagree with their PNG, given
    the ``area_mismatch`` of each image's :class:`ImagePQStats` (None: none)."""
    found = [m for m in mismatches if m is not None]
    if not found:
        return
    where, m = found[0]
    sid, json_area, png_area = m[0].tolist()
    logger.warning(
        "ground truth: segments_info 'area' disagrees with the PNG for %d segment(s) in %d "
        "image(s); first: %s, segment %d: area %d in the JSON, %d pixels in the PNG. PQ uses "
        "the PNG's pixel counts (panopticapi would use the JSON areas: fix the JSON to compare)",
        sum(len(m) for _, m in found),
        len(found),
        where,
        sid,
        json_area,
        png_area,
    )


# ----------------------------------------------------------------------------- aggregation


class PQStats:
    """Per-category sums over images, ``sums`` float64 [4, C]: matched IoU, TP, FP, FN (the
    counts are exact integers; a fixed-size array, gathered across processes as it is)."""

    def __init__(self, num_categories: int):
        self.sums = np.zeros((4, num_categories), dtype=np.float64)

    def add_image(self, s: ImagePQStats) -> None:
        """Accumulate one image. IoUs are added one by one in order (panopticapi's sums)."""
        np.add.at(self.sums[0], s.match_cat, s.match_iou)
        for row, cats in ((1, s.match_cat), (2, s.fp_cat), (3, s.fn_cat)):
            self.sums[row] += np.bincount(cats, minlength=self.sums.shape[1])

    def per_class(self) -> List[Optional[Dict[str, float]]]:
        """Per category: {"pq", "sq", "rq"} (fractions), or None when TP + FP + FN == 0."""
        out = []
        for iou, tp, fp, fn in self.sums.T.tolist():
            if tp + fp + fn == 0:
                out.append(None)
                continue
            denom = tp + 0.5 * fp + 0.5 * fn
            out.append({"pq": iou / denom, "sq": iou / tp if tp else 0.0, "rq": tp / denom})
        return out

    def average(self, isthing: Sequence[bool], which: Optional[bool] = None) -> Dict:
        """panopticapi's ``pq_average``: mean over categories with TP + FP + FN > 0.

        Args:
            isthing: bool per category [C]. which: None (all), True (things), False (stuff).
        Returns:
            {"pq", "sq", "rq", "n"}; 0.0 (not a division by zero) when n == 0.
        """
        pq, sq, rq, n = 0, 0, 0, 0
        for r, th in zip(self.per_class(), isthing):
            if r is not None and (which is None or bool(th) == which):
                n += 1
                pq += r["pq"]  # in category order, as panopticapi (bit-identical sums)
                sq += r["sq"]
                rq += r["rq"]
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}

    def results(self, category_ids: Sequence, isthing: Sequence[bool]) -> Dict:
        """The result dict of panopticapi's ``pq_compute`` (per_class keyed by category id)."""
        out = {name: self.average(isthing, which) for name, _, which in GROUPS}
        out["per_class"] = {
            cid: r or {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            for cid, r in zip(category_ids, self.per_class())
        }
        return out


# ----------------------------------------------------------------------------- files


def _load_json(path: str, what: str) -> Dict:
    try:
        with open(path, "rb") as f:  # bytes: json detects UTF-8/16/32 itself
            return json.loads(f.read())
    except FileNotFoundError:
        raise MissingFileError(f"{what} JSON not found: {path}") from None
    except IsADirectoryError:
        raise PanopticEvalError(f"{what} JSON {path} is a folder, not a JSON file") from None
    except OSError as e:
        raise PanopticEvalError(f"cannot read {what} JSON {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise PanopticEvalError(f"{what} JSON {path} is not UTF-8 text ({e.reason})") from e
    except json.JSONDecodeError as e:
        raise PanopticEvalError(f"{what} JSON {path} does not parse: {e}") from e


def compute_pq_stats(
    gt_json_file: str,
    pred_json_file: str,
    gt_folder: Optional[str] = None,
    pred_folder: Optional[str] = None,
    num_threads: Optional[int] = None,
):
    """Statistics behind :func:`pq_compute`.

    Returns:
        (PQStats over the GT JSON's categories in file order, categories list of dicts).
    """
    num_threads = num_threads or max(1, min(8, os.cpu_count() or 1))
    gt_json = _load_json(gt_json_file, "ground-truth")
    pred_json = _load_json(pred_json_file, "prediction")
    # panopticapi's default folders: ``json_file.replace('.json', '')`` (every occurrence)
    gt_folder = gt_json_file.replace(".json", "") if gt_folder is None else gt_folder
    pred_folder = pred_json_file.replace(".json", "") if pred_folder is None else pred_folder
    categories, pairs = _image_pairs(
        gt_json, pred_json, gt_json_file, pred_json_file, gt_folder, pred_folder
    )
    cat_index = {c["id"]: k for k, c in enumerate(categories)}

    def one(pair):
        return _image_stats(*pair, cat_index)

    if num_threads > 1 and len(pairs) > 1:
        pool = ThreadPoolExecutor(max_workers=num_threads)
        try:
            per_image = list(pool.map(one, pairs))
        finally:  # on an error, the images not started yet are not decoded
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        per_image = [one(p) for p in pairs]
    log_area_mismatches([s.area_mismatch for s in per_image])
    # panopticapi's pool splits the images into cpu_count() chunks, sums each chunk in image
    # order, then adds the chunk totals in chunk order: the same float sums, bit-identical.
    total = PQStats(len(categories))
    for chunk in np.array_split(np.arange(len(per_image)), multiprocessing.cpu_count()):
        part = PQStats(len(categories))
        for i in chunk.tolist():
            part.add_image(per_image[i])
        total.sums += part.sums
    return total, categories


def _image_pairs(gt_json, pred_json, gt_json_file, pred_json_file, gt_folder, pred_folder):
    """Check both parsed JSON files; pair each ground-truth image with its prediction.

    Returns:
        (checked categories, list of (image id, ground-truth annotation, prediction annotation,
        ground-truth PNG path, predicted PNG path) in ground-truth order).
    """
    for folder, what in ((gt_folder, "ground-truth"), (pred_folder, "prediction")):
        if not os.path.isdir(folder):
            raise MissingFileError(f"folder {folder} with {what} segmentations doesn't exist")
    for key, js, path in (
        ("categories", gt_json, gt_json_file),
        ("annotations", gt_json, gt_json_file),
        ("annotations", pred_json, pred_json_file),
    ):
        if not isinstance(js, dict) or key not in js:
            raise PanopticEvalError(f"{path} has no {key!r} list")
    categories = _checked_categories(gt_json["categories"], gt_json_file)
    gt_anns = check_annotations(gt_json["annotations"], gt_json_file, PanopticEvalError)
    pred_anns = check_annotations(pred_json["annotations"], pred_json_file, PanopticEvalError)
    pred_by_image = {ann["image_id"]: ann for ann in pred_anns}
    pairs = []
    for gt_ann in gt_anns:
        iid = gt_ann["image_id"]
        if iid not in pred_by_image:
            raise MissingPredictionError(
                f"no prediction for the image with id {iid!r} (ground truth "
                f"{gt_ann['file_name']}) in {pred_json_file}"
            )
        pred_ann = pred_by_image[iid]
        gt_file = os.path.join(gt_folder, gt_ann["file_name"])
        pred_file = os.path.join(pred_folder, pred_ann["file_name"])
        pairs.append((iid, gt_ann, pred_ann, gt_file, pred_file))
    return categories, pairs


def _image_stats(iid, gt_ann, pred_ann, gt_file, pred_file, cat_index):
    """:class:`ImagePQStats` of one image pair."""
    where_gt = f"image {iid!r}, ground truth {gt_file}"
    where_pred = f"image {iid!r}, prediction {pred_file}"
    gt = segment_table(gt_ann["segments_info"], cat_index, where_gt, use_area=True)
    pred = segment_table(pred_ann["segments_info"], cat_index, where_pred)
    where = f"image {iid!r}"
    # Raw PNG words: the histogram masks the id bits of its runs, not of every pixel.
    gt_ids = read_segment_ids(gt_file, where, raw=True)
    pred_ids = read_segment_ids(pred_file, where, raw=True)
    where = f"image {iid!r} ({gt_file} vs {pred_file})"
    return image_pq_stats(gt_ids, gt, pred_ids, pred, where, where_gt, where_pred, ID_LIMIT - 1)


def _checked_categories(categories, path: str) -> List[Dict]:
    """The ground truth's categories, each an object with ``id`` and ``isthing``, ids unique."""
    if not isinstance(categories, list) or not categories:
        raise PanopticEvalError(f"{path}: 'categories' must be a non-empty list")
    for i, c in enumerate(categories):
        if not isinstance(c, dict):
            raise PanopticEvalError(f"{path}: category #{i} ({c!r:.60}) is not an object")
        for key in ("id", "isthing"):
            if key not in c:
                raise PanopticEvalError(
                    f"{path}: category {c.get('id', '#' + str(i))} ({c.get('name')!r}) has no "
                    f"{key!r} (every category needs 'id' and 'isthing': 1 thing, 0 stuff)"
                )
        try:
            parse_isthing(c["isthing"])
        except ValueError as e:
            raise PanopticEvalError(
                f"{path}: category {c['id']} ({c.get('name')!r}): {e}"
            ) from None
    cat_ids = [c["id"] for c in categories]
    if len(set(cat_ids)) != len(cat_ids):
        dup = sorted({c for c in cat_ids if cat_ids.count(c) > 1})
        raise PanopticEvalError(f"{path}: duplicate category id(s) {dup}")
    return list(categories)


def pq_compute(gt_json_file, pred_json_file, gt_folder=None, pred_folder=None):
    """Panoptic quality of predictions in COCO panoptic format (drop-in for panopticapi).

    Args:
        gt_json_file, pred_json_file: COCO panoptic JSON files (``annotations`` with
            ``image_id``, ``file_name``, ``segments_info``; the ground truth also has
            ``categories`` with ``id`` and ``isthing``). Category ids are dataset ids.
        gt_folder, pred_folder: folders of the PNGs; default: the JSON path without ``.json``.
    Returns:
        panopticapi's result dict (see the module docstring), fractions in [0, 1].
    """
    start = time.perf_counter()
    stats, categories = compute_pq_stats(gt_json_file, pred_json_file, gt_folder, pred_folder)
    results = stats.results(
        [c["id"] for c in categories], [parse_isthing(c["isthing"]) for c in categories]
    )
    logger.info(
        "PQ of %s vs %s (%.2f s):\n%s",
        pred_json_file,
        gt_json_file,
        time.perf_counter() - start,
        format_pq_table(results),
    )
    return results


def format_pq_table(results: Dict, per_class: Optional[Dict] = None) -> str:
    """panopticapi's All/Things/Stuff table (percent); with ``per_class`` ({category id: (name,
    {"pq", "sq", "rq"} or None for no TP, FP or FN: shown as ``n/a``)}) then every class."""
    row = "{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}"
    lines = [row.format("", "PQ", "SQ", "RQ", "N"), "-" * 38]
    for name, _, _ in GROUPS:
        lines.append(row.format(name, *_percent(results[name]), str(results[name]["n"])))
    if per_class is not None:
        row = "{:>6} {:24.24s} {:>5s}  {:>5s}  {:>5s}"
        lines += ["", row.format("id", "class", "PQ", "SQ", "RQ")]
        for cid, (name, r) in per_class.items():
            lines.append(row.format(cid, name, *(_percent(r) if r else ["n/a"] * 3)))
    return "\n".join(lines)


def _percent(r: Dict) -> List[str]:
    return [f"{100 * r[k]:5.1f}" for k in ("pq", "sq", "rq")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jsis_d2.evaluation.pq",
        description="Panoptic quality of COCO-format panoptic predictions (panopticapi's "
        "numbers, computed natively).",
    )
    parser.add_argument("gt_json", help="ground-truth COCO panoptic JSON")
    parser.add_argument("pred_json", help="prediction COCO panoptic JSON")
    parser.add_argument(
        "--gt-folder", default=None, help="ground-truth PNGs (default: GT_JSON without .json)"
    )
    parser.add_argument(
        "--pred-folder", default=None, help="predicted PNGs (default: PRED_JSON without .json)"
    )
    parser.add_argument("--per-class", action="store_true", help="also print every class")
    parser.add_argument("--threads", type=int, default=None, help="decoding threads")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        stats, categories = compute_pq_stats(
            args.gt_json, args.pred_json, args.gt_folder, args.pred_folder, args.threads
        )
    except PanopticEvalError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    results = stats.results(
        [c["id"] for c in categories], [parse_isthing(c["isthing"]) for c in categories]
    )
    per_class = None
    if args.per_class:
        per_class = {
            c["id"]: (c.get("name", str(c["id"])), r) for c, r in zip(categories, stats.per_class())
        }
    sys.stdout.write(format_pq_table(results, per_class) + "\n")
    sys.stdout.write(f"Time elapsed: {time.perf_counter() - start:0.2f} seconds\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
