"""jsis_d2.data.ids.IdIndex: rows of ids, with and without void, any id order."""

import numpy as np

from jsis_d2.data.ids import IdIndex


def test_find_rows_and_missing_large_ids():
    rng = np.random.default_rng(3)
    ids = rng.choice(np.arange(1, 1 << 24), size=400, replace=False)
    ids[0] = (1 << 24) - 1
    for n in (1, 40, 400):
        for dtype in (np.uint64, np.int64, np.uint32):
            index = IdIndex(np.sort(ids[:n]))
            values = np.concatenate((index.ids, [5, 6, (1 << 24) - 2])).astype(dtype)
            pos, missing = index.find(values)
            expect = np.isin(values.astype(np.int64), index.ids)
            assert (missing == ~expect).all() and (index.ids[pos[expect]] == values[expect]).all()


def test_rows_follow_the_given_order_and_void():
    index = IdIndex([70000, 7, 300])  # not sorted: rows in the given order, void first
    assert index.ids.tolist() == [0, 70000, 7, 300]
    rows, missing = index.find(np.array([[7, 0], [300, 70000], [8, 300]]))
    assert rows[~missing].tolist() == [2, 0, 3, 1, 3]
    assert missing.tolist() == [[False, False], [False, False], [True, False]]
    rows, missing = IdIndex([3, 1, 2], with_void=False).find([0, 1, 2, 3])
    assert rows[1:].tolist() == [1, 2, 0] and missing.tolist() == [True, False, False, False]


def test_empty_list_finds_nothing():
    rows, missing = IdIndex([], with_void=False).find(np.array([0, 4]))
    assert missing.all() and rows.shape == (2,)
    rows, missing = IdIndex([]).find(np.array([0, 4]))
    assert rows.tolist()[0] == 0 and missing.tolist() == [False, True]
