"""Training engine: Trainer (DefaultTrainer with JSIS-Net build_* overrides), job checks and
the epoch-schedule conversion."""

from .checks import UsageError  # noqa: F401
from .schedule import resolve_epoch_schedule  # noqa: F401
from .trainer import Trainer  # noqa: F401
