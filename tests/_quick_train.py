"""Shared by the tests that train through tools/train_net.py's ``run()``: a tiny synthetic
dataset registered under a test module's own names, and the argv of a few iterations of the
quick config (64x64 inputs, tiny R18) on CPU."""

import os

from jsis_d2.data.datasets import make_synthetic_datasets, register_synthetic_datasets

QUICK_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "configs",
    "quick",
    "jsis_R18_C4_quick.yaml",
)


def tiny_synthetic_root(tmp_path_factory, names, num_val=2):
    """A synthetic dataset (4 training, ``num_val`` validation images of 64x64) in a fresh
    temporary folder, registered as ``names["train"]`` / ``names["val"]``; returns its root."""
    root = str(tmp_path_factory.mktemp("syn"))
    make_synthetic_datasets(root, num_train=4, num_val=num_val, image_size=64, register=False)
    register_synthetic_datasets(root, names=names)
    return root


def train_argv(out, train, test, *extra, max_iter=4, seed=7):
    """tools/train_net.py's argv: the quick config, OUTPUT_DIR ``out``, DATASETS.TRAIN
    ``(train,)``, DATASETS.TEST ``test`` (a tuple literal, e.g. ``"()"``), ``max_iter``
    iterations with a checkpoint every 2 and the LR step at 3, SEED ``seed``.

    The ``--flags`` in ``extra`` go before the KEY VALUE overrides, its other items after
    them (so they override these)."""
    return [
        "--config-file",
        QUICK_CONFIG,
        *[a for a in extra if a.startswith("--")],
        "OUTPUT_DIR",
        str(out),
        "DATASETS.TRAIN",
        f"('{train}',)",
        "DATASETS.TEST",
        test,
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "SOLVER.STEPS",
        "(3,)",
        "SEED",
        str(seed),
        *[a for a in extra if not a.startswith("--")],
    ]
