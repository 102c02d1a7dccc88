"""Pure target derivation: panoptic ids + segments_info -> sem_seg, instance targets."""

import numpy as np
import pytest
import torch

from jsis_d2.data.targets import (
    checked_index_map,
    segment_index_map,
    targets_from_index_map,
    targets_to_instances,
)

# contiguous classes: 0, 1 things (T=2); 2, 3 stuff (K=4)
SEGMENTS = [
    {"id": 7, "category_id": 2, "isthing": False, "iscrowd": 0},  # stuff "sky"
    {"id": 300, "category_id": 3, "isthing": False, "iscrowd": 0},  # stuff "grass"
    {"id": 70000, "category_id": 1, "isthing": True, "iscrowd": 0},  # thing
    {"id": 5, "category_id": 0, "isthing": True, "iscrowd": 0},  # thing
    {"id": 9, "category_id": 1, "isthing": True, "iscrowd": 1},  # crowd
]


def panoptic_targets(pan, segments, **kwargs):
    """Targets of an id map (the mapper's path: index map, then targets)."""
    index, unknown = segment_index_map(pan, [s["id"] for s in segments])
    assert unknown == []
    return targets_from_index_map(index, segments, **kwargs)


def _map():
    pan = np.full((6, 8), 7, dtype=np.int64)
    pan[4:, :] = 300
    pan[1:3, 1:4] = 70000  # rows 1-2, cols 1-3
    pan[0, 6] = 5
    pan[3, 5:8] = 9
    pan[5, 0] = 0  # void
    return pan


def test_semantic_and_instance_targets():
    pan = _map()
    t = panoptic_targets(pan, SEGMENTS)
    expected = np.full(pan.shape, 255)
    for s in SEGMENTS:
        expected[pan == s["id"]] = s["category_id"]
    assert t.sem_seg.dtype == np.int64
    np.testing.assert_array_equal(t.sem_seg, expected)
    assert t.sem_seg[5, 0] == 255 and t.sem_seg[3, 6] == 1  # void -> ignore, crowd -> class
    # instances: the two non-crowd things, in segments_info order; the crowd is not one
    np.testing.assert_array_equal(t.segment_ids, [70000, 5])
    np.testing.assert_array_equal(t.classes, [1, 0])
    assert t.masks.shape == (2, 6, 8) and t.masks.dtype == bool
    np.testing.assert_array_equal(t.masks[0], pan == 70000)
    np.testing.assert_array_equal(t.masks[1], pan == 5)


def test_crowd_ignore_and_custom_ignore_label():
    pan = _map()
    t = panoptic_targets(pan, SEGMENTS, crowd_sem_seg="ignore", ignore_label=99)
    assert (t.sem_seg[pan == 9] == 99).all()
    assert (t.sem_seg[pan == 0] == 99).all()
    assert (t.sem_seg[pan == 300] == 3).all()
    assert 9 not in t.segment_ids
    with pytest.raises(ValueError, match="CROWD_SEM_SEG"):
        panoptic_targets(pan, SEGMENTS, crowd_sem_seg="drop")


def test_thing_without_pixels_is_not_an_instance():
    pan = _map()
    pan[pan == 5] = 7  # thing 5 vanished (e.g. after a downscale)
    t = panoptic_targets(pan, SEGMENTS)
    np.testing.assert_array_equal(t.segment_ids, [70000])
    no_things = [s for s in SEGMENTS if not s["isthing"]]
    stuff_only = np.where(np.isin(pan, [0, 7, 300]), pan, 7)
    t = panoptic_targets(stuff_only, no_things)
    assert t.masks.shape == (0, 6, 8) and t.classes.shape == (0,)


def test_checked_index_map_both_directions():
    pan = _map()
    ids = [s["id"] for s in SEGMENTS]
    index = checked_index_map(pan, ids, "p.png")
    np.testing.assert_array_equal(index, segment_index_map(pan, ids)[0])
    assert index[5, 0] == 0 and index[1, 1] == 3  # void; third segment (70000)
    pan[0, 0] = 1234
    with pytest.raises(ValueError, match=r"^panoptic PNG p.png contains segment id\(s\) \[1234\]"):
        checked_index_map(pan, ids, "p.png")
    with pytest.raises(ValueError, match="1234"):
        checked_index_map(pan, [], "p.png")
    pan[0, 0] = 7
    with pytest.raises(ValueError, match=r"of p.png lists segment id\(s\) \[4242\] that do not"):
        checked_index_map(pan, ids + [4242], "p.png")


def test_instances_boxes_from_masks():
    t = panoptic_targets(_map(), SEGMENTS)
    inst = targets_to_instances(t)
    assert inst.image_size == (6, 8)
    # XYXY, max exclusive: thing 70000 spans cols 1-3, rows 1-2; thing 5 is pixel (row 0, col 6)
    torch.testing.assert_close(
        inst.gt_boxes.tensor, torch.tensor([[1.0, 1.0, 4.0, 3.0], [6.0, 0.0, 7.0, 1.0]])
    )
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [1, 0]
    assert inst.gt_masks.tensor.shape == (2, 6, 8)
    assert torch.equal(inst.gt_masks.tensor[0], torch.from_numpy(_map() == 70000))
    empty = targets_to_instances(panoptic_targets(np.full((4, 4), 7), SEGMENTS[:1]))
    assert len(empty) == 0 and empty.gt_boxes.tensor.shape == (0, 4)
