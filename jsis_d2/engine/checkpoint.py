"""JSISCheckpointer: Detectron2's DetectionCheckpointer with crash-safe saves and resume.

- Every file it writes (``<name>.pth``, the ``last_checkpoint`` tag) is written atomically: a
  kill or a full disk during a save leaves the previous checkpoint and tag, no partial file.
- At resume, a tag that is empty or names a missing, empty or truncated file (a run killed
  mid-write before saves were atomic, a copy cut short) is reported in one warning, and the
  newest readable ``*.pth`` in OUTPUT_DIR is used instead (none: :class:`UsageError`).

Saving and loading themselves are fvcore's / Detectron2's: only the file opening and the
choice of the file to resume from are overridden.
"""

import logging
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import HookBase

from ..utils.atomic import atomic_open
from .checks import UsageError, checkpoint_problem

__all__ = ["JSISCheckpointer", "EnsureFinalCheckpoint"]

logger = logging.getLogger(__name__)

TAG_FILE = "last_checkpoint"  # fvcore's name for the tag


class _AtomicWritePathManager:
    """Delegates to an iopath PathManager, except that opening a local file for writing
    ("w"/"wb") goes through :func:`atomic_open`. fvcore's ``save`` and
    ``tag_last_checkpoint`` write with ``with self.path_manager.open(...) as f``."""

    def __init__(self, inner):
        self._inner = inner

    def open(self, path, mode="r", buffering=-1, **kwargs):
        if mode in ("w", "wb") and "://" not in str(path):
            return atomic_open(path, mode)
        return self._inner.open(path, mode, buffering, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class JSISCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer (same arguments), see the module docstring."""

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.path_manager = _AtomicWritePathManager(self.path_manager)
        self._reported = set()  # fallback warnings already logged (get_checkpoint_file is
        # called several times per resume)

    @classmethod
    def like(cls, other):
        """A JSISCheckpointer for the same model, folder and checkpointables as ``other``."""
        return cls(
            other.model, other.save_dir, save_to_disk=other.save_to_disk, **other.checkpointables
        )

    def get_checkpoint_file(self):
        """The checkpoint to resume from: the one ``last_checkpoint`` names when it is
        readable, else the newest readable ``*.pth`` in save_dir (with a warning); "" when
        there is no tag. Raises UsageError when the tag is bad and no checkpoint is readable.
        """
        tag = os.path.join(self.save_dir, TAG_FILE)
        try:
            with open(tag) as f:
                name = f.read().strip()
        except OSError:
            return ""
        named = os.path.join(self.save_dir, name) if name else ""
        problem = checkpoint_problem(named) if name else None
        if name and problem is None:
            return named
        what = f"names {name}, which is {problem}" if name else "is empty"
        fallback = self._newest_readable(exclude=named)
        if fallback is None:
            raise UsageError(
                f"cannot resume: {tag} {what}, and no other readable checkpoint (*.pth) is in "
                f"{self.save_dir}. Remove {tag} to start over from MODEL.WEIGHTS."
            )
        self._warn_once(f"{tag} {what}; resuming from the newest readable checkpoint {fallback}")
        return fallback

    def _warn_once(self, message):
        if message not in self._reported:
            self._reported.add(message)
            logger.warning(message)

    def _newest_readable(self, exclude=""):
        """The most recently written readable ``*.pth`` in save_dir, or None."""
        files = [p for p in self.get_all_checkpoint_files() if p != exclude]
        files.sort(key=lambda p: (os.path.getmtime(p), p), reverse=True)
        for p in files:
            problem = checkpoint_problem(p)
            if problem is None:
                return p
            self._warn_once(f"Skipping unreadable checkpoint {p}: {problem}")
        return None


class EnsureFinalCheckpoint(HookBase):
    """After a run that reached MAX_ITER, save ``model_final.pth`` again if it is missing or
    unreadable (a resume that fell back to the last iteration's periodic checkpoint trains
    no step, so Detectron2's PeriodicCheckpointer never rewrites it)."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer

    def after_train(self):
        trainer = self.trainer
        final = os.path.join(self.checkpointer.save_dir, "model_final.pth")
        if trainer.iter < trainer.max_iter or checkpoint_problem(final) is None:
            return  # stopped early (error) or the file is fine
        last = trainer.max_iter - 1  # what a save after the last step records
        logger.warning(
            "Rewriting %s (%s) from the model at iteration %d",
            final,
            checkpoint_problem(final),
            last,
        )
        done, trainer.iter = trainer.iter, last
        try:
            self.checkpointer.save("model_final", iteration=last)
        finally:
            trainer.iter = done
