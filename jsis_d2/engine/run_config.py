"""OUTPUT_DIR/config.yaml when a run is resumed (or evaluated) with a different config.

Detectron2's ``default_setup`` rewrites ``OUTPUT_DIR/config.yaml`` on every start, which would
replace the record of what the first part of the run was trained with. Instead:

- keys whose new value the checkpoint's optimizer and LR-scheduler state would silently
  override (:data:`RESTORED_FROM_CHECKPOINT`) are refused: :class:`UsageError` lists them;
- any other change (e.g. SOLVER.MAX_ITER to extend a run) takes effect and is logged key by
  key; config.yaml is kept and the new config goes beside it as ``config.resume-N.yaml``
  (``config.eval-N.yaml`` for ``--eval-only``), N = 1, 2, ...
"""

import logging
import os

import yaml

from ..utils.atomic import atomic_write_text
from .checks import UsageError

__all__ = ["SavedConfigGuard", "changed_keys", "RESTORED_FROM_CHECKPOINT"]

logger = logging.getLogger(__name__)

SAVED_CONFIG = "config.yaml"
#: Not compared: the same folder may be spelled differently; a resumed run loads the
#: checkpoint, not MODEL.WEIGHTS.
IGNORED_KEYS = ("OUTPUT_DIR", "MODEL.WEIGHTS")
#: Values a resume takes from the checkpoint (optimizer param groups, the scheduler's
#: base_lrs), whatever the config says.
RESTORED_FROM_CHECKPOINT = (
    "SOLVER.OPTIMIZER",
    "SOLVER.BASE_LR",
    "SOLVER.BIAS_LR_FACTOR",
    "SOLVER.MOMENTUM",
    "SOLVER.NESTEROV",
    "SOLVER.WEIGHT_DECAY",
    "SOLVER.WEIGHT_DECAY_NORM",
    "SOLVER.WEIGHT_DECAY_BIAS",
    "SOLVER.ADAMW_BETAS",
)


def _flatten(node, prefix=""):
    out = {}
    for key, value in (node or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def changed_keys(saved_yaml, cfg):
    """{dotted key: (saved value, new value)} for the keys that differ between a saved
    config.yaml text and ``cfg`` (both compared as ``cfg.dump()`` YAML), IGNORED_KEYS aside."""
    old = _flatten(yaml.safe_load(saved_yaml))
    new = _flatten(yaml.safe_load(cfg.dump()))
    return {
        k: (old.get(k), new.get(k))
        for k in sorted(set(old) | set(new))
        if k not in IGNORED_KEYS and old.get(k) != new.get(k)
    }


def _free_name(output_dir, kind):
    n = 1
    while os.path.exists(os.path.join(output_dir, f"config.{kind}-{n}.yaml")):
        n += 1
    return os.path.join(output_dir, f"config.{kind}-{n}.yaml")


class SavedConfigGuard:
    """``guard = SavedConfigGuard(cfg, resume, eval_only)`` before ``default_setup`` (raises
    UsageError for refused changes), ``guard.restore()`` after it (puts the saved
    config.yaml back and writes the new config beside it; main process only)."""

    def __init__(self, cfg, resume=False, eval_only=False):
        self.path = os.path.join(cfg.OUTPUT_DIR, SAVED_CONFIG)
        self.saved = None
        continuing = resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
        if not (continuing or eval_only) or not os.path.isfile(self.path):
            return  # a new run: config.yaml is its own
        with open(self.path) as f:
            saved = f.read()
        try:
            changes = changed_keys(saved, cfg)
        except yaml.YAMLError:
            changes = {"(unreadable saved config.yaml)": (None, None)}
        if not changes:
            return
        refused = [k for k in changes if k in RESTORED_FROM_CHECKPOINT]
        if continuing and not eval_only and refused:
            raise UsageError(
                f"--resume: {', '.join(_describe(k, changes[k]) for k in refused)} differ from "
                f"{self.path}, but the checkpoint's optimizer keeps the saved values. Resume "
                "without these changes, or start a new OUTPUT_DIR with MODEL.WEIGHTS set to the "
                "checkpoint"
            )
        self.saved = saved
        self.changes = changes
        self.new_path = _free_name(cfg.OUTPUT_DIR, "eval" if eval_only else "resume")
        self.new_text = cfg.dump()

    def restore(self):
        """Undo default_setup's overwrite of config.yaml; write the new config beside it."""
        if self.saved is None:
            return
        atomic_write_text(self.new_path, self.new_text)
        atomic_write_text(self.path, self.saved)
        logger.warning(
            "Config differs from the run's %s in %d key(s): %s. Kept %s as it was; this run's "
            "config is in %s",
            self.path,
            len(self.changes),
            "; ".join(_describe(k, v) for k, v in self.changes.items()),
            self.path,
            self.new_path,
        )


def _describe(key, values):
    return f"{key} {values[0]!r} -> {values[1]!r}"
