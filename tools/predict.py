#!/usr/bin/env python
"""Panoptic predictions for whole datasets, in the COCO panoptic results format.

    python tools/predict.py --config-file CFG --input imgs/ --output OUT \
        --opts MODEL.WEIGHTS output/demo/model_final.pth            # PyTorch (default)
    python tools/predict.py --config-file CFG --image-info image_info_test-dev2017.json \
        --image-root test2017/ --output OUT --num-gpus 8 --opts MODEL.WEIGHTS W
    python tools/predict.py --backend onnx --model EXPORT_DIR --input imgs/ --output OUT

OUT/predictions.json + OUT/panoptic/*.png; a rerun of the same command resumes. The ONNX
backend needs only numpy, onnxruntime and Pillow (requirements/deploy.txt): nothing from
torch, detectron2 or jsis_d2 is imported for it. Logic: jsis_runtime.cli (both backends'
arguments, the ONNX run) and jsis_d2.engine.predict (the PyTorch run). docs/PREDICT.md.
"""

import sys

from jsis_runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
