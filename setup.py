"""jsis_d2: JSIS-Net panoptic segmentation as a Detectron2 extension.

detectron2 itself is deliberately NOT in ``install_requires``: official builds are installed
from source (distribution name ``detectron2``) and the CPU setup here uses the
``pb1-detectron2`` sdist; either satisfies ``import detectron2``. See README "Setup".
"""

from setuptools import find_packages, setup

setup(
    name="jsis_d2",
    version="0.1.0",
    description="JSIS-Net panoptic segmentation (joint semantic + instance) on Detectron2",
    # Only the libraries: benchmarks/, tests/, tools/ and configs/ run from the repository.
    # jsis_runtime (the torch-free ONNX runtime) needs only requirements/deploy.txt: a deploy
    # install is `pip install -r requirements/deploy.txt && pip install --no-deps .`.
    packages=find_packages(include=("jsis_d2", "jsis_d2.*", "jsis_runtime", "jsis_runtime.*")),
    package_data={"jsis_d2": ["data/datasets/*.json"]},
    python_requires=">=3.8",
    install_requires=[
        "torch>=1.8",
        "torchvision",
        "numpy",
        "Pillow",
        "pycocotools>=2.0.2",
        "fvcore",
        "opencv-python-headless",
        "matplotlib",
    ],
    extras_require={
        # panopticapi is the reference implementation the tests compare against.
        "test": ["pytest", "panopticapi-lite"],
    },
)
