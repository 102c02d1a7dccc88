"""The one label space of jsis_d2, and conversion to and from dataset category ids.

Id spaces used across the project:

- **dataset id**: the ``id`` of a category in the dataset's JSON (COCO panoptic: 1..200 with
  gaps; Mapillary Vistas: 1..65). Used in every file: panoptic JSON, PNG segments_info,
  saved predictions.
- **contiguous index** ``k`` in ``[0, K)``: used inside the model and in dataset dicts. Things
  come first, by increasing dataset id (``k < T``), then stuff by increasing dataset id
  (``T <= k < K``). The ORDER of the categories list plays no part: two JSON files listing the
  same categories in another order give the same label space (COCO, Mapillary Vistas and the
  synthetic data list theirs by id, so their indices are the same as in list order).
  So the thing index used by Detectron2's ROI heads (``gt_classes``/``pred_classes`` in
  ``[0, T)``) IS the contiguous index of that thing: no second mapping exists.

``K = len(categories)`` is ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``; ``T = number of things`` is
``MODEL.ROI_HEADS.NUM_CLASSES``.
"""

from typing import Dict, List, Sequence

import numpy as np

__all__ = ["LabelSpace", "check_categories", "parse_isthing", "label_space_difference"]


class LabelSpace:
    """Maps dataset category ids <-> contiguous indices (things first, then stuff), from dataset
    ``categories``: dicts with ``id`` (int), ``name`` (str), ``isthing`` (0/1 or bool) and
    optionally ``color`` ([r, g, b]). Keyed by id: the list's order does not matter."""

    def __init__(self, categories: Sequence[Dict]):
        check_categories(categories)
        by_id = sorted(categories, key=lambda c: int(c["id"]))
        things = [c for c in by_id if parse_isthing(c["isthing"])]
        stuff = [c for c in by_id if not parse_isthing(c["isthing"])]
        self.categories: List[Dict] = [dict(c) for c in things + stuff]
        self.num_classes = len(self.categories)  # K
        self.num_things = len(things)  # T
        self.dataset_ids: List[int] = [int(c["id"]) for c in self.categories]
        self.names: List[str] = [str(c["name"]) for c in self.categories]
        self.is_thing: List[bool] = [parse_isthing(c["isthing"]) for c in self.categories]
        self.colors: List[List[int]] = [
            list(c.get("color", _fallback_color(k))) for k, c in enumerate(self.categories)
        ]
        self._to_contiguous = {d: k for k, d in enumerate(self.dataset_ids)}

    def to_contiguous(self, dataset_id: int) -> int:
        """Dataset category id -> contiguous index; KeyError naming the id if unknown."""
        try:
            return self._to_contiguous[int(dataset_id)]
        except KeyError:
            raise KeyError(
                f"unknown category id {dataset_id} (known: {sorted(self._to_contiguous)})"
            ) from None

    def to_dataset_id(self, index: int) -> int:
        """Contiguous index -> dataset category id."""
        if not 0 <= int(index) < self.num_classes:
            raise IndexError(f"contiguous index {index} outside [0, {self.num_classes})")
        return self.dataset_ids[int(index)]

    def metadata(self) -> Dict:
        """The ``MetadataCatalog`` fields (Detectron2 conventions): ``thing_classes`` has T
        names, ``stuff_classes`` all K (index = contiguous index), so Detectron2's Visualizer
        draws semantic maps and panoptic segments of both kinds by contiguous index."""
        things = range(self.num_things)
        return {
            "thing_classes": [self.names[k] for k in things],
            "thing_colors": [self.colors[k] for k in things],
            "stuff_classes": list(self.names),
            "stuff_colors": list(self.colors),
            "thing_dataset_id_to_contiguous_id": {self.dataset_ids[k]: k for k in things},
            "stuff_dataset_id_to_contiguous_id": dict(self._to_contiguous),
            "is_thing": list(self.is_thing),
            "num_things": self.num_things,
            "categories": [dict(c) for c in self.categories],
        }

    @classmethod
    def from_metadata(cls, metadata) -> "LabelSpace":
        """Rebuild from the ``categories`` field that :meth:`metadata` stored."""
        cats = getattr(metadata, "categories", None)
        if cats is None:
            raise KeyError(
                f"metadata of dataset {getattr(metadata, 'name', '?')!r} has no 'categories' "
                "(was it registered by jsis_d2?)"
            )
        return cls(cats)


def parse_isthing(value) -> bool:
    """A category's ``isthing``: 1/0 or true/false (JSON numbers or booleans), else ValueError.
    Strings are refused, not parsed: "0" is truthy in Python and in panopticapi (every class
    a thing), while ``== 1`` makes "1" stuff, so a JSON with strings means different label
    spaces to different tools; the one fix that keeps them all in agreement is the file's."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(
        f"'isthing' must be 1 or 0 (or true/false), got {value!r} ({type(value).__name__})"
    )


def label_space_difference(a: "LabelSpace", b: "LabelSpace") -> str:
    """ "" when ``a`` and ``b`` are the same label space (the same ids, names and thing/stuff
    kinds at the same contiguous indices; colors aside), else a phrase naming the first
    difference."""
    ids_a, ids_b = set(a.dataset_ids), set(b.dataset_ids)
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        return f"category ids only in the first: {only_a[:8]}, only in the second: {only_b[:8]}"
    kind = {True: "thing", False: "stuff"}
    for i in sorted(ids_a):  # same ids and kinds -> same contiguous indices
        ka, kb = a.to_contiguous(i), b.to_contiguous(i)
        if a.is_thing[ka] != b.is_thing[kb]:
            return (
                f"category {i} ({a.names[ka]!r}) is a {kind[a.is_thing[ka]]} in the first, a "
                f"{kind[b.is_thing[kb]]} in the second"
            )
        if a.names[ka] != b.names[kb]:
            return (
                f"category {i} is named {a.names[ka]!r} in the first, {b.names[kb]!r} in the second"
            )
    return ""


def check_categories(categories: Sequence[Dict]) -> None:
    """ValueError (one line, naming the category) unless ``categories`` is a non-empty list of
    dicts with unique ``id`` (what ``int`` accepts), ``name`` and ``isthing`` (1/0 or
    true/false: :func:`parse_isthing`). A missing ``isthing`` is an error, not "stuff": that
    would silently turn thing classes into stuff."""
    if not categories or isinstance(categories, (str, bytes, dict)):
        raise ValueError(f"the category list is empty or not a list: {categories!r:.80}")
    categories = list(categories)
    for i, c in enumerate(categories):
        if not isinstance(c, dict):
            raise ValueError(f"category #{i} is not an object: {c!r:.80}")
        missing = [k for k in ("id", "name", "isthing") if k not in c]
        if missing:
            raise ValueError(
                f"category {c.get('id', '#' + str(i))} ({c.get('name')!r}) has no "
                f"{', '.join(map(repr, missing))} (every category needs id, name and isthing)"
            )
        try:
            int(c["id"])
        except (TypeError, ValueError):
            raise ValueError(f"category {c['name']!r} has a non-integer id {c['id']!r}") from None
        try:
            parse_isthing(c["isthing"])
        except ValueError as e:
            raise ValueError(f"category {c['id']} ({c['name']!r}): {e}") from None
    ids = [int(c["id"]) for c in categories]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"duplicate category id(s) {dup}")


def _fallback_color(k: int) -> List[int]:
    return np.random.RandomState(k).randint(0, 256, size=3).tolist()
