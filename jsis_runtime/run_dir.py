"""The output folder of a prediction run: whose it is, and whether a rerun may resume in it.

``OUT/predict_run.json`` records the run's *signature*: the arguments that decide the
predictions (backend, model or config + weights and their sha256, the image list's digest),
not those that only decide the speed (threads, workers, processes). A rerun with the same
signature resumes; anything else is refused unless ``--overwrite``, which removes this
runner's files (never other files in OUT) and starts again.
"""

import hashlib
import json
import logging
import os
import shutil
from typing import Dict, Sequence

from .atomic import atomic_write_text
from .coco_panoptic import FIGURES_DIRNAME, PANOPTIC_DIRNAME, PREDICTIONS_JSON, RECORDS_DIRNAME
from .errors import RuntimeUsageError
from .inputs import ImageItem

__all__ = ["RUN_FILE", "RUN_FORMAT", "file_sha256", "items_digest", "prepare_output_dir"]

logger = logging.getLogger(__name__)

RUN_FILE = "predict_run.json"
RUN_FORMAT = "jsis_d2.predict/1"
#: Everything a run writes in OUT (what --overwrite removes).
OWN_ENTRIES = (PANOPTIC_DIRNAME, RECORDS_DIRNAME, FIGURES_DIRNAME, PREDICTIONS_JSON, RUN_FILE)


def file_sha256(path: str) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def items_digest(items: Sequence[ImageItem]) -> str:
    """sha256 over the (id, absolute path, PNG name) of every image, in order."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.image_id, os.path.abspath(it.path), it.name]).encode())
    return h.hexdigest()


def _remove_own_entries(out: str) -> None:
    for name in OWN_ENTRIES:
        path = os.path.join(out, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def prepare_output_dir(out: str, signature: Dict, overwrite: bool = False) -> bool:
    """Make ``out`` ready for a run with ``signature`` (a JSON-able dict).

    Returns True when it resumes an earlier run with the same signature (its finished images
    are kept), False for a new run.
    Raises:
        RuntimeUsageError: ``out`` is a file; or holds another run's or foreign files and
            ``overwrite`` is False (nothing is touched then).
    """
    signature = {"format": RUN_FORMAT, **signature}
    if os.path.exists(out) and not os.path.isdir(out):
        raise RuntimeUsageError(f"--output {out} is an existing file; give a folder")
    run_file = os.path.join(out, RUN_FILE)
    entries = os.listdir(out) if os.path.isdir(out) else []
    if os.path.isfile(run_file):
        try:
            with open(run_file, encoding="utf-8") as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = None
        if previous == signature:
            logger.info("Resuming the run in %s (same arguments): finished images are kept", out)
            return True
        if not overwrite:
            changed = sorted(
                k
                for k in set(signature) | set(previous or {})
                if (previous or {}).get(k) != signature.get(k)
            )
            raise RuntimeUsageError(
                f"--output {out} holds a prediction run with other arguments (differing: "
                f"{', '.join(changed) or 'unreadable ' + RUN_FILE}); pass --overwrite to replace "
                "it, or choose another folder; nothing was changed"
            )
    elif entries and not overwrite:
        raise RuntimeUsageError(
            f"--output {out} is not empty and holds no prediction run ({RUN_FILE} missing); "
            "pass --overwrite to write into it anyway, or choose another folder; nothing was "
            "changed"
        )
    if overwrite:
        _remove_own_entries(out)
    os.makedirs(out, exist_ok=True)
    atomic_write_text(run_file, json.dumps(signature, indent=1, sort_keys=True))
    return False
