"""The train/evaluate job behind ``tools/train_net.py`` (and the demo): config setup, job
checks, Detectron2's ``launch``, and clean one-line errors for known failures."""

import contextlib
import errno
import json
import logging
import os
import sys
import tempfile

from torch.multiprocessing.spawn import ProcessException

from detectron2.data import MetadataCatalog
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils import logger as d2_logger
from detectron2.utils.logger import setup_logger

from ..config import ConfigError, setup_cfg
from ..data.build import DatasetError, checked_dataset_dicts
from ..data.dataset_mapper import BadSampleError
from ..data.datasets.panoptic import DatasetNotFoundError
from ..data.label_space import LabelSpace
from ..evaluation.pq import PanopticEvalError
from ..utils.atomic import remove_stale_temporaries
from ..utils.folder_lock import FolderBusyError, acquire_folder
from .checkpoint import JSISCheckpointer
from .checks import (
    UsageError,
    check_checkpoint_label_space,
    check_checkpoint_matches_model,
    check_datasets,
    check_device,
    check_output_dir,
    check_weights_readable,
    fallback_syncbn,
)
from .distributed import (
    ERROR_FILE_ENV,
    check_launch,
    check_ranks_in_sync,
    destroy_process_groups,
    report_worker_error,
    worker_error,
)
from .run_config import SavedConfigGuard
from .schedule import resolve_epoch_schedule
from .trainer import Trainer

__all__ = ["setup", "main", "run", "separate_run_logs", "describe_failure"]

logger = logging.getLogger(__name__)

#: Failures with a known cause: the job ends with one line naming it (exit code 2), not a
#: traceback.
USER_ERRORS = (
    ConfigError,
    UsageError,
    BadSampleError,
    DatasetNotFoundError,
    PanopticEvalError,
    FolderBusyError,
    DatasetError,
)


#: The line a Ctrl-C ends a training with (exit code 130, the shell's for SIGINT).
INTERRUPTED = (
    "interrupted; checkpoints already in OUTPUT_DIR are intact (saves are atomic): continue "
    "with --resume"
)


def _message(e: BaseException) -> str:
    """The one-line message of ``e``, also when a DataLoader worker re-raised it (then the
    message holds the worker's traceback, and the original message is its last line)."""
    msg = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    if "Original Traceback" in msg:
        last = [line for line in msg.splitlines() if line.strip()][-1]
        msg = last.split(": ", 1)[1] if ": " in last else last
    return msg.strip()


def _no_space(e: BaseException):
    """The ENOSPC OSError behind ``e`` (itself, or in its ``__cause__``/``__context__`` chain:
    a full disk often surfaces as another error raised while handling it, e.g. torch's
    "PytorchStreamWriter failed writing file"), or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return e
        e = e.__cause__ or e.__context__
    return None


def describe_failure(e: BaseException, prog: str = "train_net"):
    """``(text, exit_code)`` for a failure with a known cause, or None (a bug: traceback);
    ``prog`` starts the text (the tool's name)."""
    if isinstance(e, USER_ERRORS):
        return f"{prog}: error: {_message(e)}", 2
    if isinstance(e, FloatingPointError):
        return (
            f"{prog}: training stopped: {_message(e)}\nThe last checkpoint in OUTPUT_DIR is "
            "intact; lower SOLVER.BASE_LR or check the data, then continue with --resume.",
            3,
        )
    full = _no_space(e)
    if full is not None:
        where = f" writing {full.filename}" if full.filename else ""
        return (
            f"{prog}: error: no space left on the device{where}; checkpoints already in "
            "OUTPUT_DIR are intact (saves are atomic): free space, then continue with --resume",
            2,
        )
    return None


def _not_a_known_failure(record) -> bool:
    """Log filter: drops Detectron2's "Exception during training:" traceback for failures with
    a known cause; :func:`run` reports those as one line instead."""
    exc = record.exc_info[1] if record.exc_info else None
    return exc is None or describe_failure(exc) is None


#: Loggers that Detectron2's ``default_setup`` and :func:`setup` give handlers.
RUN_LOGGERS = ("detectron2", "fvcore", "jsis_d2")


@contextlib.contextmanager
def separate_run_logs(names=RUN_LOGGERS):
    """Several trainings in one process (e.g. ``tools/ablation.py``), each with its own log.

    Without this, the second run's ``setup_logger`` calls make every line print twice and go
    into the first run's ``log.txt`` too. On exit, the handlers added inside the block are
    removed (log files closed) and Detectron2's ``setup_logger`` caches cleared, so the next
    run sets its handlers up again (until then, messages reach no handler).
    """
    before = {n: list(logging.getLogger(n).handlers) for n in names}
    try:
        yield
    finally:
        for n in names:
            lg = logging.getLogger(n)
            for h in [h for h in lg.handlers if h not in before[n]]:
                lg.removeHandler(h)
                if getattr(h, "stream", None) not in (sys.stdout, sys.stderr):
                    h.close()
        setup_logger.cache_clear()
        d2_logger._cached_log_stream.cache_clear()  # it holds the closed files now


def lock_output_dir(output_dir):
    """This process's hold of OUTPUT_DIR (:func:`~jsis_d2.utils.folder_lock.acquire_folder`):
    FolderBusyError when another run uses it, UsageError when it cannot be created/written."""
    try:
        return acquire_folder(output_dir, "OUTPUT_DIR")
    except OSError as e:
        raise UsageError(f"OUTPUT_DIR {output_dir!r} is not writable: {e.strerror or e}") from e


def setup(args, holds=None):
    """Config from file + opts, the OUTPUT_DIR lock (rank 0: one run per folder), job checks,
    epoch schedule, Detectron2's default_setup. The lock's hold is appended to ``holds``
    (the caller releases it); without ``holds`` it lasts as long as the process."""
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    if comm.get_rank() == 0:  # before anything is written there
        hold = lock_output_dir(cfg.OUTPUT_DIR)
        if holds is not None:
            holds.append(hold)
        for path in remove_stale_temporaries(cfg.OUTPUT_DIR):  # held: no writer is using them
            logger.warning("Removed %s, the temporary file of a save that was killed", path)
    check_output_dir(cfg.OUTPUT_DIR, resume=args.resume, eval_only=args.eval_only)
    check_device(cfg)
    fallback_syncbn(cfg)
    check_datasets(cfg)
    if not args.eval_only:
        resolve_epoch_schedule(cfg)
    cfg.freeze()
    # addFilter is idempotent: a second setup in the process adds nothing
    logging.getLogger("detectron2.engine.train_loop").addFilter(_not_a_known_failure)
    saved_config = SavedConfigGuard(cfg, resume=args.resume, eval_only=args.eval_only)
    default_setup(cfg, args)  # (re)writes OUTPUT_DIR/config.yaml
    if comm.is_main_process():
        saved_config.restore()  # a resumed run's own config.yaml is kept
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="jsis_d2")
    return cfg


def main(args):
    """Train (returns the final evaluation results) or, with ``--eval-only``, evaluate; the
    OUTPUT_DIR lock is held until it returns."""
    holds = []
    try:
        return _main(args, holds)
    finally:
        for hold in holds:
            hold.release()


def _main(args, holds):
    cfg = setup(args, holds)
    for name in cfg.DATASETS.TEST:  # up front: not after the whole training
        checked_dataset_dicts(name)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = JSISCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        if args.resume and checkpointer.has_checkpoint():
            path = checkpointer.get_checkpoint_file()
        else:
            path = cfg.MODEL.WEIGHTS
        if not path:
            raise UsageError("--eval-only needs MODEL.WEIGHTS (a checkpoint) or --resume")
        check_checkpoint_matches_model(model, path, require_all=True)
        for name in cfg.DATASETS.TEST:
            md = MetadataCatalog.get(name)
            if getattr(md, "categories", None) is not None:
                check_checkpoint_label_space(path, LabelSpace.from_metadata(md), name)
        checkpointer.load(path)
        logger.info("Evaluating checkpoint %s", path)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            out = os.path.join(cfg.OUTPUT_DIR, "eval_results.json")
            with open(out, "w") as f:
                json.dump({"checkpoint": path, "results": results}, f, indent=2, default=float)
            logger.info("Wrote %s", out)
        return results

    if not (args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))):
        check_weights_readable(cfg.MODEL.WEIGHTS)  # a new run starts from these
    trainer = Trainer(cfg)
    if args.resume and trainer.checkpointer.has_checkpoint():
        check_checkpoint_matches_model(trainer.model, trainer.checkpointer.get_checkpoint_file())
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    check_ranks_in_sync(trainer.model)
    return getattr(trainer, "_last_eval_results", None)


def _worker_main(args):
    """:func:`main` in one of ``launch``'s processes: a known failure leaves its one-line
    error for the launcher (exit code 2/3) instead of a traceback; the process groups are
    torn down after the job."""
    try:
        result = main(args)
    except Exception as e:
        failure = describe_failure(e)
        if failure is None or comm.get_world_size() == 1:
            raise
        worker_error(*failure)
    destroy_process_groups()
    return result


def launch_reporting(worker, args, describe, prefix: str = "jsis_d2_launch_") -> int:
    """Run ``worker(args)`` through Detectron2's ``launch`` (one process per GPU, or per CPU
    rank with gloo; :func:`check_launch` first) and turn a failure with a known cause, in this
    process or in a worker, into one line on stderr and its exit code.

    Args:
        worker: the function each process runs; a known failure there leaves its line with
            :func:`worker_error` (the error file is named in ``$JSIS_D2_WORKER_ERROR_FILE``).
        args: parsed arguments with ``num_gpus``, ``num_machines``, ``machine_rank``,
            ``dist_url`` (Detectron2's ``default_argument_parser``).
        describe: ``describe(exception)`` -> ``(line, exit_code)`` for a failure of this
            process with a known cause, or None (a bug: the traceback is kept).
        prefix: of the temporary folder holding the worker error file.
    Returns 0, or the exit code of the failure reported. ``KeyboardInterrupt`` propagates.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        error_file = os.path.join(tmp, "worker_error")
        os.environ[ERROR_FILE_ENV] = error_file  # inherited by the spawned workers
        try:
            check_launch(args)
            launch(
                worker,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(args,),
            )
        except Exception as e:
            if isinstance(e, ProcessException):  # a worker failed: its own line, if it left one
                failure = report_worker_error(error_file)
            else:
                failure = describe(e)
            if failure is None:
                raise
            sys.stderr.write(failure[0] + "\n")
            return failure[1]
        finally:
            os.environ.pop(ERROR_FILE_ENV, None)
    return 0


def run(argv=None):
    """Parse arguments, launch (one process per GPU, or per CPU rank with gloo), and turn
    known failures, in this process or in a worker, into one clean line and an exit code."""
    args = default_argument_parser().parse_args(argv)
    try:
        return launch_reporting(_worker_main, args, describe_failure)
    except KeyboardInterrupt:
        sys.stderr.write(f"train_net: {INTERRUPTED}\n")
        return 130
