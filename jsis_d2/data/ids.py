"""IdIndex: the one vectorized lookup from ids to rows of an id list (panoptic segment ids ->
rows of ``segments_info``; class indices of the semantic confusion). Pure numpy."""

import numpy as np

__all__ = ["IdIndex"]


class IdIndex:
    """Rows of ids in a list of distinct integer ids (any order), by binary search.

    ``IdIndex(ids)``: row 0 is void (id 0), row ``i + 1`` is ``ids[i]`` (the layout of a
    joint histogram, or of an index map where 0 means void). ``with_void=False``: row ``i`` is
    ``ids[i]``.

    Attributes:
        ids: int64 [N] (``[N + 1]`` with void), the id of each row.
    """

    def __init__(self, ids, with_void: bool = True):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self.ids = np.concatenate((np.zeros(1, dtype=np.int64), ids)) if with_void else ids
        self._order = np.argsort(self.ids, kind="stable")  # a repeated id: its first row
        self._sorted = self.ids[self._order]

    def find(self, values):
        """Rows of integer ``values`` (any shape).

        Returns:
            (int64 rows, bool mask of the values not in the list), both of the shape of
            ``values``; the row of a value not in the list is arbitrary (in [0, N)).
        """
        values = np.asarray(values)
        if len(self.ids) == 0:
            return np.zeros(values.shape, dtype=np.int64), np.ones(values.shape, dtype=bool)
        if values.dtype == np.uint64:  # int64 vs uint64 would compare as float64
            values = values.astype(np.int64)
        pos = np.searchsorted(self._sorted, values)
        np.minimum(pos, len(self.ids) - 1, out=pos)
        return self._order[pos], self._sorted[pos] != values
