"""An exported JSIS-Net (``model.onnx`` + ``model.json``) on onnxruntime: image in, panoptic
segmentation with DATASET category ids out. Needs numpy, Pillow and onnxruntime only.

Id spaces: the graph's ``segments`` carry CONTIGUOUS category indices k in [0, K); the
sidecar's ``categories[k]["id"]`` turns them into dataset ids, which is what
:meth:`OnnxPanopticModel.predict` returns (as the saved predictions and the COCO panoptic
format use).
"""

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import SidecarError
from .preprocess import network_input
from .sidecar import GRAPH_INPUTS, GRAPH_OUTPUTS, Sidecar, load_sidecar

__all__ = ["OnnxPanopticModel", "segments_from_table"]

logger = logging.getLogger(__name__)


def segments_from_table(
    segments: np.ndarray, scores: np.ndarray, sidecar: Sidecar, where: str = "model"
) -> List[Dict]:
    """The graph's ``segments`` int64 [S, 4] (id, k, isthing, area) and ``segment_scores``
    float32 [S] -> segments_info: [{"id", "category_id" (DATASET id), "isthing", "area",
    "score" (things only)}] in row order.

    Raises ValueError naming ``where`` for a table of the wrong shape or a k outside [0, K).
    """
    segments = np.asarray(segments).reshape(-1, 4) if np.size(segments) else np.zeros((0, 4))
    scores = np.asarray(scores).reshape(-1)
    if len(scores) != len(segments):
        raise ValueError(f"{where}: {len(segments)} segment rows but {len(scores)} segment scores")
    ids = sidecar.dataset_ids
    out = []
    for (sid, k, isthing, area), score in zip(segments.tolist(), scores.tolist()):
        if not 0 <= k < len(ids):
            raise ValueError(
                f"{where}: segment {sid} has category index {k} outside [0, {len(ids)})"
            )
        seg = {"id": int(sid), "category_id": ids[k], "isthing": bool(isthing), "area": int(area)}
        if isthing:
            seg["score"] = float(score)
        out.append(seg)
    return out


class OnnxPanopticModel:
    """``OnnxPanopticModel(model_dir).predict(image_rgb)`` -> (panoptic_seg, segments_info).

    Args:
        model_dir: an export folder (``model.json`` + the ``model_file`` it names, ONNX).
        num_threads: onnxruntime intra-op threads (None: onnxruntime's default, all cores).
        providers: onnxruntime execution providers (None: CPU).

    Threads do not spin while idle (``session.intra_op.allow_spinning`` = "0"): spinning
    threads steal the cores of the reader and writer threads and of other processes.
    """

    def __init__(
        self,
        model_dir: str,
        num_threads: Optional[int] = None,
        providers: Optional[Sequence[str]] = None,
    ):
        import onnxruntime as ort  # here: the sidecar is usable without onnxruntime

        self.sidecar = load_sidecar(model_dir)
        if self.sidecar.backend != "onnx":
            raise SidecarError(
                f"{self.sidecar.path}: backend is {self.sidecar.backend!r}; this runtime "
                "runs 'onnx' exports (export with --format onnx)"
            )
        if not os.path.isfile(self.sidecar.model_path):
            raise SidecarError(
                f"{self.sidecar.path}: model_file {self.sidecar.model_path} does not exist"
            )
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                self.sidecar.model_path,
                sess_options=options,
                providers=list(providers) if providers else ["CPUExecutionProvider"],
            )
        except Exception as e:
            raise SidecarError(
                f"{self.sidecar.model_path}: onnxruntime cannot load it: {e}"
            ) from None
        self._check_graph()

    def _check_graph(self) -> None:
        ins = [i.name for i in self.session.get_inputs()]
        outs = [o.name for o in self.session.get_outputs()]
        if sorted(ins) != sorted(GRAPH_INPUTS) or not set(GRAPH_OUTPUTS) <= set(outs):
            raise SidecarError(
                f"{self.sidecar.model_path}: graph inputs {ins} / outputs {outs}; expected "
                f"inputs {list(GRAPH_INPUTS)} and outputs {list(GRAPH_OUTPUTS)}"
            )

    @property
    def input_size(self) -> Tuple[int, int]:
        """(H_in, W_in), the network input size."""
        return self.sidecar.input_size

    def predict(self, image_rgb: np.ndarray) -> Tuple[np.ndarray, List[Dict]]:
        """Panoptic segmentation of one image.

        Args:
            image_rgb: uint8 [H, W, 3], RGB, at its ORIGINAL size.
        Returns:
            panoptic_seg: int32 [H, W], 0 = void, else a segment id;
            segments_info: [{"id", "category_id" (DATASET id), "isthing", "area",
                "score" (things only)}], in the graph's row order (segment id order).
        """
        h, w = np.asarray(image_rgb).shape[:2]
        feeds = {
            "image": network_input(image_rgb, self.sidecar.input_size, self.sidecar.input_format),
            "orig_size": np.array([h, w], dtype=np.int64),
        }
        pan, segments, scores = self.session.run(list(GRAPH_OUTPUTS), feeds)
        pan = np.asarray(pan)
        if pan.shape != (h, w):
            raise ValueError(
                f"{self.sidecar.model_path}: panoptic_seg has shape {pan.shape}, expected the "
                f"image's {(h, w)}"
            )
        info = segments_from_table(segments, scores, self.sidecar, self.sidecar.model_path)
        return pan.astype(np.int32, copy=False), info
