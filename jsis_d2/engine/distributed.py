"""Multi-process training on Detectron2's ``launch``: what the installed stack can run, the
DDP wrapping of a CPU model, one-line errors out of worker processes, and a clean teardown.

Processes: ``--num-gpus N`` starts N processes per machine (one per GPU with CUDA, NCCL; N CPU
processes without, gloo); ``--num-machines M --machine-rank R --dist-url tcp://HOST:PORT``
joins M such machines into one world of M*N ranks.
"""

import contextlib
import hashlib
import importlib
import inspect
import logging
import os
import sys

import torch
import torch.distributed as dist

from detectron2.engine import defaults as d2_defaults
from detectron2.utils import comm

from .checks import UsageError

__all__ = [
    "check_launch",
    "check_ranks_in_sync",
    "cpu_aware_ddp",
    "destroy_process_groups",
    "launch_supports_cpu",
    "report_worker_error",
    "worker_error",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the file where a worker leaves its one-line error.
ERROR_FILE_ENV = "JSIS_D2_WORKER_ERROR_FILE"


def launch_supports_cpu() -> bool:
    """Whether the installed detectron2's ``launch`` can start CPU (gloo) processes.

    Official detectron2 gained it in 2023 (it picks GLOO when CUDA is absent); v0.6 asserts
    CUDA in every worker. Judged from the source of its worker function."""
    # the module, not the function ``detectron2.engine.launch`` that shadows its name
    d2_launch = importlib.import_module("detectron2.engine.launch")
    try:
        source = inspect.getsource(d2_launch._distributed_worker)
    except (AttributeError, OSError, TypeError):
        return False
    return "gloo" in source.lower()


def check_launch(args) -> None:
    """Raise :class:`UsageError` for a process layout this machine and stack cannot run."""
    if args.num_gpus < 1 or args.num_machines < 1:
        raise UsageError(
            f"--num-gpus {args.num_gpus} --num-machines {args.num_machines}: both must be >= 1"
        )
    if not 0 <= args.machine_rank < args.num_machines:
        raise UsageError(
            f"--machine-rank {args.machine_rank} must be in [0, {args.num_machines - 1}] "
            f"for --num-machines {args.num_machines}"
        )
    if args.num_gpus * args.num_machines == 1:
        return
    if torch.cuda.is_available():
        if args.num_gpus > torch.cuda.device_count():
            raise UsageError(
                f"--num-gpus {args.num_gpus} but this machine has {torch.cuda.device_count()} "
                "CUDA GPU(s)"
            )
    elif not launch_supports_cpu():
        raise UsageError(
            f"--num-gpus {args.num_gpus} --num-machines {args.num_machines} without CUDA needs "
            "detectron2's CPU (gloo) launch, which this detectron2 (v0.6) lacks: use the "
            "official stack (`make setup DETECTRON2=official`) or --num-gpus 1"
        )
    if args.num_machines > 1 and not str(args.dist_url).startswith("tcp://"):
        raise UsageError(
            f"--num-machines {args.num_machines} needs --dist-url tcp://HOST:PORT of machine "
            f"0 (got {args.dist_url!r})"
        )


@contextlib.contextmanager
def cpu_aware_ddp():
    """While active, DefaultTrainer's ``create_ddp_model`` wraps a CPU model with
    ``device_ids=None``: Detectron2 passes ``device_ids=[local_rank]``, which
    DistributedDataParallel refuses for a CPU module (detectron2 issue #5146). A CUDA model
    keeps Detectron2's arguments; only our Trainer's construction goes through this."""
    original = d2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        first = next(model.parameters(), None)
        if comm.get_world_size() > 1 and first is not None and first.device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the names and bytes of every parameter and buffer of ``model`` (the module
    inside a DDP wrapper)."""
    model = getattr(model, "module", model)
    h = hashlib.sha256()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_ranks_in_sync(model: torch.nn.Module) -> None:
    """After training with several processes: every rank must hold the same weights (DDP
    averages gradients, so any difference means the ranks trained different models).
    Raises RuntimeError naming the ranks that differ from rank 0; no-op in one process."""
    if comm.get_world_size() == 1:
        return
    digests = comm.all_gather(weights_digest(model))
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise RuntimeError(f"ranks {differ} end training with other weights than rank 0")
    logger.info(
        "All %d ranks end training with identical weights (sha256 %s)", len(digests), digests[0]
    )


def destroy_process_groups(barrier: bool = True) -> None:
    """Wait for every rank, then destroy all process groups and drop detectron2's cached
    handles to them (no-op without a process group).

    A gloo group still alive while its process exits can abort it ("terminate called without
    an active exception"); detectron2 never destroys its groups and its ``comm`` caches keep
    them alive until interpreter shutdown."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if barrier:
        dist.barrier()
    dist.destroy_process_group()
    for name in ("_get_global_gloo_group", "create_local_process_group"):
        cached = getattr(comm, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
    if getattr(comm, "_LOCAL_PROCESS_GROUP", None) is not None:
        comm._LOCAL_PROCESS_GROUP = None


def worker_error(message: str, exit_code: int) -> None:
    """In a worker process: leave ``message`` for the launching process and exit.

    The first failing rank of this machine writes the error file (created exclusively, so
    ranks failing at once do not interleave); the launcher prints it as one line."""
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(f"{exit_code}\n{message}")
    else:
        sys.stderr.write(message + "\n")
    destroy_process_groups(barrier=False)
    sys.exit(exit_code)


def report_worker_error(path: str):
    """``(message, exit_code)`` a worker left in ``path`` (as :func:`describe_failure` gives
    them), or None."""
    try:
        with open(path) as f:
            code, message = f.read().split("\n", 1)
        return message, int(code)
    except (OSError, ValueError):
        return None
