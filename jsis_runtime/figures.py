"""Optional pictures of predictions (``--figures``): the image with each segment tinted in its
category's colour and segment boundaries drawn, numpy + Pillow only."""

from typing import Callable, Dict, List, Sequence

import numpy as np

__all__ = ["draw_overlay", "overlay_drawer"]


def draw_overlay(
    image_rgb: np.ndarray,
    pan: np.ndarray,
    segments_info: List[Dict],
    colors: Dict[int, Sequence[int]],
    alpha: float = 0.5,
) -> np.ndarray:
    """uint8 RGB [H, W, 3]: ``image_rgb`` blended with the colour of each pixel's segment's
    category (``colors``: dataset category id -> [r, g, b]; things get a per-instance shade),
    void pixels untouched, boundaries between segments white."""
    pan = np.asarray(pan)
    lut_ids = np.array([int(s["id"]) for s in segments_info] or [0], dtype=np.int64)
    lut = np.zeros((len(lut_ids), 3), dtype=np.float32)
    for i, s in enumerate(segments_info):
        color = np.asarray(colors.get(int(s["category_id"]), (128, 128, 128)), np.float32)
        if s.get("isthing"):
            color = np.clip(color + (int(s["id"]) * 37 % 61 - 30), 0, 255)
        lut[i] = color
    order = np.argsort(lut_ids)
    pos = np.clip(np.searchsorted(lut_ids[order], pan), 0, len(lut_ids) - 1)
    found = lut_ids[order][pos] == pan
    seg_color = lut[order][pos]
    out = image_rgb.astype(np.float32)
    labelled = found & (pan != 0)
    out[labelled] = (1 - alpha) * out[labelled] + alpha * seg_color[labelled]
    edge = np.zeros(pan.shape, dtype=bool)
    edge[:, 1:] |= pan[:, 1:] != pan[:, :-1]
    edge[1:, :] |= pan[1:, :] != pan[:-1, :]
    out[edge] = 255
    return out.round().astype(np.uint8)


def overlay_drawer(categories: Sequence[Dict]) -> Callable:
    """``draw(image_rgb, pan, segments_info)`` with the colours of ``categories`` (dicts with
    "id" and "color")."""
    colors = {int(c["id"]): c.get("color", (128, 128, 128)) for c in categories}
    return lambda image, pan, segments_info: draw_overlay(image, pan, segments_info, colors)
