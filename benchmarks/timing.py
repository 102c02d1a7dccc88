"""The one timer of the benchmarks, and the machine-load reading every result states.

:func:`time_calls` times one or several zero-argument callables ("sides" of a comparison):
``warmup`` untimed calls of each, then ``repeats`` rounds in which every side is called once,
in turn (interleaved, so that load from other processes hits all sides alike). Wall time is
``time.perf_counter``; with ``cpu_time`` the process's CPU time (``time.process_time``: all
threads of this process, not its child processes) is recorded too; ``synchronize`` (e.g.
``torch.cuda.synchronize``) is called before and after each timed call so that asynchronous
device work is inside the measurement. A benchmark with a single side passes a one-entry dict.
"""

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

__all__ = ["Timing", "time_calls", "load_average"]


@dataclass
class Timing:
    """Seconds of the timed calls of one side, in call order, and that side's last output."""

    wall: List[float] = field(default_factory=list)
    cpu: List[float] = field(default_factory=list)  # empty unless ``cpu_time``
    last: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def min(self) -> float:
        return min(self.wall)

    def summary(self) -> Dict[str, Any]:
        """``{"median_s", "min_s", "times_s"}`` (times rounded to 0.1 ms): the result keys."""
        return {
            "median_s": self.median,
            "min_s": self.min,
            "times_s": [round(t, 4) for t in self.wall],
        }


def time_calls(
    fns: Mapping[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    cpu_time: bool = False,
    synchronize: Optional[Callable[[], None]] = None,
) -> Dict[str, Timing]:
    """Time every callable of ``fns`` (name -> zero-argument callable), interleaved.

    Args:
        fns: the sides; the order of the dict is the order of the calls in each round.
        repeats: timed rounds (each side called once per round).
        warmup: untimed calls of each side before the first round (in the same order).
        cpu_time: also record this process's CPU time of each call (``Timing.cpu``).
        synchronize: called before and after each timed call (device work, e.g. CUDA).
    Returns:
        name -> :class:`Timing` with ``repeats`` wall times (and CPU times) and the output of
        the side's last call (warm-up included, so it is set even when ``repeats`` is 0).
    """
    out = {name: Timing() for name in fns}
    for _ in range(warmup):
        for name, fn in fns.items():
            out[name].last = fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            if synchronize is not None:
                synchronize()
            c0, t0 = time.process_time(), time.perf_counter()
            out[name].last = fn()
            if synchronize is not None:
                synchronize()
            out[name].wall.append(time.perf_counter() - t0)
            if cpu_time:
                out[name].cpu.append(time.process_time() - c0)
    return out


def load_average() -> Optional[float]:
    """The machine's 1-minute load average, rounded to 0.01 (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
