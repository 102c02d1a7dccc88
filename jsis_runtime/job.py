"""The prediction loop shared by every backend: images read ahead, predicted in order, written
off the compute path, finished images skipped on a rerun.

    loaded = prefetch_images(items)                          # a reader thread (or a DataLoader)
    result = predict_images(loaded, predict_fn, writer, total=len(items))

``predict_fn(image_rgb uint8 [H, W, 3]) -> (panoptic_seg int [H, W], segments_info with
DATASET category ids)``. The writer thread encodes the PNG and writes the files
(:class:`~jsis_runtime.coco_panoptic.PanopticResultsWriter`) while the next image is
predicted; an error there stops the job at the next image.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import UnreadableImageError
from .image_io import read_image_rgb
from .inputs import ImageItem

__all__ = ["JobResult", "prefetch_images", "predict_images", "Progress"]

logger = logging.getLogger(__name__)

_DONE = object()


@dataclass
class JobResult:
    """What one process predicted.

    Attributes:
        records: PNG name -> COCO panoptic record, for the images written in this run.
        skipped: (path, reason) of the images that could not be read.
    """

    records: Dict[str, Dict] = field(default_factory=dict)
    skipped: List[Tuple[str, str]] = field(default_factory=list)


def prefetch_images(
    items: Sequence[ImageItem], depth: int = 4, read: Callable = read_image_rgb
) -> Iterator[Tuple[ImageItem, object]]:
    """Yield ``(item, image uint8 RGB [H, W, 3] or the UnreadableImageError)`` in order, a
    reader thread decoding up to ``depth`` images ahead."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def reader():
        for item in items:
            try:
                loaded = read(item.path)
            except UnreadableImageError as e:
                loaded = e
            except BaseException as e:
                q.put((None, e))
                return
            while not stop.is_set():
                try:
                    q.put((item, loaded), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        q.put((None, _DONE))

    thread = threading.Thread(target=reader, name="jsis_runtime-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, loaded = q.get()
            if item is None:
                if loaded is _DONE:
                    return
                raise loaded
            yield item, loaded
    finally:
        stop.set()


class Progress:
    """images/s progress: a tqdm bar when tqdm is installed and enabled, else a log line
    every ``interval`` seconds."""

    def __init__(self, total: int, desc: str = "predict", enabled: bool = True, interval=10.0):
        self.total, self.n, self._start = total, 0, time.perf_counter()
        self._last_log, self._interval, self._bar = self._start, interval, None
        self._enabled = enabled
        if enabled:
            try:
                import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm.tqdm(total=total, desc=desc, unit="img", smoothing=0.1)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if self._enabled and (now - self._last_log >= self._interval or self.n == self.total):
            self._last_log = now
            rate = self.n / max(now - self._start, 1e-9)
            logger.info("%d/%d images, %.2f images/s", self.n, self.total, rate)

    def close(self) -> float:
        """Close the bar; returns images/s over the whole run."""
        if self._bar is not None:
            self._bar.close()
        return self.n / max(time.perf_counter() - self._start, 1e-9)


class _Writer:
    """A thread writing predictions through ``writer``; errors surface in the caller."""

    def __init__(self, writer, depth: int):
        self._writer = writer
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: Optional[BaseException] = None
        self.records: Dict[str, Dict] = {}
        self._thread = threading.Thread(target=self._run, name="jsis_runtime-writer", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            job = self._q.get()
            if job is _DONE:
                return
            if self._error is not None:
                continue  # drain: the caller raises
            item, pan, segments_info, image = job
            try:
                self.records[item.name] = self._writer.write(
                    item.name, item.image_id, pan, segments_info, image=image
                )
            except BaseException as e:
                self._error = e

    def check(self):
        if self._error is not None:
            raise self._error

    def put(self, item, pan, segments_info, image):
        self.check()
        self._q.put((item, pan, segments_info, image))

    def close(self):
        self._q.put(_DONE)
        self._thread.join()
        self.check()


def predict_images(
    loaded: Iterable[Tuple[ImageItem, object]],
    predict_fn: Callable[[np.ndarray], Tuple[np.ndarray, List[Dict]]],
    writer,
    total: int,
    progress: bool = True,
    write_depth: int = 4,
) -> JobResult:
    """Predict and write every ``(item, image or error)`` of ``loaded``.

    An unreadable image (``loaded`` gives its :class:`UnreadableImageError`) is logged and
    listed in :attr:`JobResult.skipped`; any other error stops the job (files already
    written stay: a rerun resumes after them).
    """
    result = JobResult()
    bar = Progress(total, enabled=progress)
    out = _Writer(writer, write_depth)
    try:
        for item, image in loaded:
            if isinstance(image, BaseException):
                logger.warning("Skipping %s: %s", item.path, image)
                result.skipped.append((item.path, str(image)))
            else:
                pan, segments_info = predict_fn(image)
                out.put(item, pan, segments_info, image)
            bar.update()
    finally:
        try:
            out.close()
        finally:
            rate = bar.close()
    result.records = out.records
    logger.info("Predicted %d image(s) (%.2f images/s)", len(out.records), rate)
    return result
