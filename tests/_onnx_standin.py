"""A tiny stand-in for an exported JSIS-Net that honours the export's graph contract
(``jsis_runtime.sidecar``), built with ``onnx.helper``, for runtime tests without a model.

The graph: channel 2 of ``image`` (R for "BGR" input, B for "RGB"), nearest-resized to
``orig_size`` (asymmetric coordinates, floor) -> pixels > 127.5 are segment 2 (category
index ``THING_K``, a thing, score 0.9), the others segment 1 (``STUFF_K``, stuff).
:func:`expected_prediction` computes the same in numpy from an RGB image.
"""

import copy
import json
import os

import numpy as np
from PIL import Image

# The synthetic dataset's label space (jsis_d2.data.synthetic), contiguous order.
CATEGORIES = [
    {"id": i + 1, "name": n, "isthing": True, "color": [200, 20 * i, 60]}
    for i, n in enumerate(("disc", "triangle", "square", "cross"))
] + [
    {"id": 11 + i, "name": n, "isthing": False, "color": [20 * i, 130, 180]}
    for i, n in enumerate(("sky", "grass", "bricks", "tiles", "sand"))
]
THING_K, STUFF_K = 2, 6  # dataset ids 3 ("square") and 13 ("bricks")
THING_SCORE = float(np.float32(0.9))  # as the graph gives it back


def sidecar_dict(height, width, fmt="BGR", model_file="model.onnx"):
    """A ``model.json`` for the stand-in."""
    return {
        "format": "jsis_d2.export/1",
        "model_file": model_file,
        "backend": "onnx",
        "input": {
            "height": height,
            "width": width,
            "format": fmt,
            "dtype": "uint8",
            "layout": "HWC",
            "resize": "bilinear",
        },
        "pixel_mean": [103.53, 116.28, 123.675],
        "pixel_std": [1.0, 1.0, 1.0],
        "categories": copy.deepcopy(CATEGORIES),
        "merge": {
            "name": "jsis",
            "stuff_area_thresh": 16,
            "instance_score_thresh": 0.5,
            "mask_threshold": 0.5,
        },
        "inputs": ["image", "orig_size"],
        "outputs": ["panoptic_seg", "segments", "segment_scores"],
        "source": {"config_file": "standin", "weights": "", "onnx_opset": 17},
    }


def write_standin_model(folder, height=16, width=24, fmt="BGR"):
    """Write ``folder/model.onnx`` + ``folder/model.json``; returns ``folder``."""
    from onnx import TensorProto, helper, save

    def const(name, values, dtype):
        arr = np.asarray(values)
        return helper.make_node(
            "Constant",
            [],
            [name],
            value=helper.make_tensor(name + "_v", dtype, arr.shape, arr.reshape(-1).tolist()),
        )

    i64, f32, i32 = TensorProto.INT64, TensorProto.FLOAT, TensorProto.INT32
    nodes = [
        const("chan", 2, i64),
        const("axes01", [0, 1], i64),
        const("ones2", [1, 1], i64),
        const("half", 127.5, f32),
        const("one_i32", 1, i32),
        const("two_i32", 2, i32),
        const("seg_ids", [[1], [2]], i64),
        const("seg_cats", [[STUFF_K, 0], [THING_K, 1]], i64),
        const("scores", [1.0, THING_SCORE], f32),
        helper.make_node("Cast", ["image"], ["x"], to=f32),
        helper.make_node("Gather", ["x", "chan"], ["c"], axis=2),
        helper.make_node("Unsqueeze", ["c", "axes01"], ["c4"]),
        helper.make_node("Concat", ["ones2", "orig_size"], ["sizes"], axis=0),
        helper.make_node(
            "Resize",
            ["c4", "", "", "sizes"],
            ["r4"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        helper.make_node("Squeeze", ["r4", "axes01"], ["r"]),
        helper.make_node("Greater", ["r", "half"], ["m"]),
        helper.make_node("Where", ["m", "two_i32", "one_i32"], ["panoptic_seg"]),
        helper.make_node("Cast", ["m"], ["m64"], to=i64),
        helper.make_node("ReduceSum", ["m64"], ["area2"], keepdims=0),
        helper.make_node("ReduceProd", ["orig_size"], ["total"], keepdims=0),
        helper.make_node("Sub", ["total", "area2"], ["area1"]),
        helper.make_node("Unsqueeze", ["area1", "axes0"], ["a1"]),
        helper.make_node("Unsqueeze", ["area2", "axes0"], ["a2"]),
        helper.make_node("Concat", ["a1", "a2"], ["areas"], axis=0),
        helper.make_node("Unsqueeze", ["areas", "axes1"], ["areas_col"]),
        helper.make_node("Concat", ["seg_ids", "seg_cats", "areas_col"], ["segments"], axis=1),
        helper.make_node("Identity", ["scores"], ["segment_scores"]),
    ]
    nodes.insert(0, const("axes0", [0], i64))
    nodes.insert(0, const("axes1", [1], i64))
    graph = helper.make_graph(
        nodes,
        "jsis_standin",
        [
            helper.make_tensor_value_info("image", TensorProto.UINT8, [height, width, 3]),
            helper.make_tensor_value_info("orig_size", i64, [2]),
        ],
        [
            helper.make_tensor_value_info("panoptic_seg", i32, ["H", "W"]),
            helper.make_tensor_value_info("segments", i64, ["S", 4]),
            helper.make_tensor_value_info("segment_scores", f32, ["S"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    os.makedirs(folder, exist_ok=True)
    save(model, os.path.join(folder, "model.onnx"))
    with open(os.path.join(folder, "model.json"), "w") as f:
        json.dump(sidecar_dict(height, width, fmt), f)
    return str(folder)


def expected_prediction(image_rgb, height=16, width=24, fmt="BGR"):
    """What the stand-in predicts for ``image_rgb`` uint8 [H, W, 3], computed independently of
    jsis_runtime (Pillow's bilinear resize directly, then a floor nearest-upsampling that is
    exact when H, W are multiples of the input size): (ids int32 [H, W], segments_info with
    dataset ids, segments without pixels included, as the graph lists them)."""
    h, w = image_rgb.shape[:2]
    assert h % height == 0 and w % width == 0, "pick sizes that are multiples of the input"
    small = np.asarray(Image.fromarray(image_rgb).resize((width, height), Image.BILINEAR))
    chan = small[:, :, 0 if fmt == "BGR" else 2].astype(np.float32)
    big = np.repeat(np.repeat(chan, h // height, axis=0), w // width, axis=1)
    ids = np.where(big > 127.5, 2, 1).astype(np.int32)
    area2 = int((ids == 2).sum())
    segs = [
        {
            "id": 1,
            "category_id": CATEGORIES[STUFF_K]["id"],
            "isthing": False,
            "area": h * w - area2,
        },
        {
            "id": 2,
            "category_id": CATEGORIES[THING_K]["id"],
            "isthing": True,
            "area": area2,
            "score": THING_SCORE,
        },
    ]
    return ids, segs


def make_image(h, w, seed):
    """A uint8 RGB [h, w, 3] with blocky red and blue channels that differ."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(blocks, -(-h // 4), axis=0), -(-w // 6), axis=1)[:h, :w]
    return np.ascontiguousarray(img)
