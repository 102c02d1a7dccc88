"""jsis_runtime: running an exported JSIS-Net without PyTorch or Detectron2.

Imports only numpy, Pillow and (for :mod:`jsis_runtime.onnx_model`) onnxruntime; tqdm is used
when installed. ``requirements/deploy.txt`` pins exactly these. Modules:

- :mod:`.sidecar`: read and check ``model.json``, the export's description of the model.
- :mod:`.image_io`: decode an image file to uint8 RGB (EXIF orientation, 16-bit files).
- :mod:`.preprocess`: the network input: fixed-size bilinear resize (as Detectron2's
  ``ResizeTransform`` does for uint8) and channel order.
- :mod:`.onnx_model`: :class:`~jsis_runtime.onnx_model.OnnxPanopticModel`, image in, panoptic
  map and segments (DATASET category ids) out.
- :mod:`.inputs`: the list of images to predict (files, folders, globs, COCO image-info JSON).
- :mod:`.coco_panoptic`: the COCO panoptic results writer shared by every backend.
- :mod:`.job`: the prediction loop (read ahead, predict, write off the compute path, resume).
- :mod:`.run_dir`: whose output folder it is (``predict_run.json``), resume or refuse.
- :mod:`.cli`: ``tools/predict.py``'s arguments and its ONNX backend.
- :mod:`.compare`: category agreement of two prediction folders.
- :mod:`.figures`, :mod:`.atomic`, :mod:`.errors`: pictures, atomic writes, error types.

Nothing here imports torch, detectron2, jsis_d2, cv2 or pycocotools (a test checks it).
"""

__version__ = "0.1.0"
