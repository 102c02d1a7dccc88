"""JSISDatasetMapper: one dataset dict -> model input, with targets derived at load time.

Shape legend: H, W = original image size (dataset dict "height"/"width"); H', W' = network
input size (``INPUT.JSIS.FIXED_SIZE``); N = number of instance targets.

Nothing is preprocessed offline: the image and the panoptic PNG go through the same geometric
transforms (image bilinear, panoptic map nearest, so semantic map and masks stay aligned),
then :mod:`jsis_d2.data.targets` derives ``sem_seg`` over all K classes (void ->
``ignore_label``) and the instances (non-crowd things with a pixel left after the resize;
boxes tight around the resized masks, the JSON bbox unused).

Bad samples raise :class:`BadSampleError` naming the file: missing/corrupt image or PNG, an
image of another size than its dataset dict or its PNG, a PNG id missing from segments_info or
the reverse. (Grayscale, palette, RGBA and 16-bit images are converted, :mod:`.image_io`.)
With ``DATALOADER.SKIP_BAD_SAMPLES`` a TRAINING mapper logs the file, the reason and a running
count (per worker) and returns None, so Detectron2's ``MapDataset`` draws another sample; once
all ``num_samples`` distinct samples failed it raises "no usable training sample in
<dataset>", as MapDataset would otherwise fail in ``random.sample`` ("Sample larger than
population"). Test-mode mappers always raise: evaluating on a silently different image set
would give wrong numbers.
"""

import copy
import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T

from .augmentations import build_augmentations
from .image_io import read_image
from .panoptic_png import PanopticPNGError, id2rgb, read_panoptic_png, rgb2id
from .targets import (
    check_crowd_sem_seg,
    checked_index_map,
    segment_index_map,
    targets_from_index_map,
    targets_to_instances,
)

__all__ = ["JSISDatasetMapper", "BadSampleError"]

logger = logging.getLogger(__name__)


class BadSampleError(ValueError):
    """A sample whose files are missing, corrupt or inconsistent (the message names the file)."""


def _read_image(file_name: str, image_format: str) -> np.ndarray:
    try:
        return read_image(file_name, format=image_format)
    except FileNotFoundError:
        raise BadSampleError(f"image file not found: {file_name}") from None
    except (OSError, SyntaxError, ValueError) as e:  # incl. PIL's UnidentifiedImageError
        raise BadSampleError(f"cannot read image {file_name}: {e}") from e


def _read_index_map(pan_file: str, seg_ids: List[int], image_file: str, size):
    """Read a training sample's panoptic PNG and check it against its image (of ``size``
    (H, W)) and segments_info: (segment ids uint32 [H, W], index map int32 [H, W]: 0 = void,
    i + 1 = ``seg_ids[i]``); BadSampleError naming the PNG."""
    try:
        pan_ids = read_panoptic_png(pan_file)
    except PanopticPNGError as e:
        raise BadSampleError(str(e)) from e
    if pan_ids.shape != tuple(size):
        raise BadSampleError(
            f"panoptic PNG {pan_file} is {pan_ids.shape[0]}x{pan_ids.shape[1]} but its "
            f"image {image_file} is {size[0]}x{size[1]}"
        )
    return pan_ids, checked_index_map(pan_ids, seg_ids, pan_file, BadSampleError)


class JSISDatasetMapper:
    """Maps a jsis_d2 panoptic dataset dict to the model input.

    Output (dict):
        "image": uint8 tensor [3, H', W'] in ``image_format`` channel order;
        "height", "width": ORIGINAL size H, W; "file_name", "image_id";
        training: "sem_seg" int64 [H', W'] (contiguous k, void = ignore_label) and
        "instances" (``Instances`` of size (H', W'): gt_boxes XYXY, gt_classes int64 in
        [0, T), gt_masks BitMasks [N, H', W']);
        test: "pan_seg_file_name" and "segments_info" passed through (for the evaluator).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List,
        image_format: str = "BGR",
        crowd_sem_seg: str = "class",
        ignore_label: int = 255,
        skip_bad_samples: bool = False,
        num_samples: Optional[int] = None,
        dataset_names: Sequence[str] = (),
    ):
        """
        Args:
            is_train: training mode (targets, flip) or test mode (image only).
            augmentations: Detectron2 augmentations/transforms (``build_augmentations``).
            crowd_sem_seg: "class" or "ignore": semantic target of crowd pixels.
            ignore_label: semantic target of void pixels.
            skip_bad_samples: training only: return None (logged) instead of raising.
            num_samples: distinct samples (:meth:`sample_key`) of the dataset; with
                ``skip_bad_samples``, once that many failed in this worker, raise "no usable
                training sample" naming ``dataset_names``. None: never (MapDataset fails).
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.crowd_sem_seg = check_crowd_sem_seg(crowd_sem_seg)
        self.ignore_label = int(ignore_label)
        self.skip_bad_samples = bool(skip_bad_samples) and is_train
        self.num_skipped = 0
        self.num_samples = num_samples
        self.dataset_names = tuple(dataset_names)
        self._failed = set()  # sample_key of every sample that failed in this worker
        mode = "training" if is_train else "inference"
        logger.info("[JSISDatasetMapper] Augmentations used in %s: %s", mode, augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "crowd_sem_seg": cfg.INPUT.JSIS.CROWD_SEM_SEG,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "skip_bad_samples": cfg.DATALOADER.SKIP_BAD_SAMPLES,
            "dataset_names": tuple(cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST),
        }

    @staticmethod
    def sample_key(dataset_dict: Dict):
        """What makes two dataset dicts the same sample: (image file, panoptic PNG)."""
        return dataset_dict.get("file_name"), dataset_dict.get("pan_seg_file_name")

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        try:
            return self._map(dataset_dict)
        except BadSampleError as e:
            if not self.skip_bad_samples:
                raise
            self.num_skipped += 1
            self._failed.add(self.sample_key(dataset_dict))
            if self.num_samples is not None and len(self._failed) >= self.num_samples:
                raise BadSampleError(
                    f"no usable training sample in {', '.join(self.dataset_names) or 'the dataset'}"
                    f": all {self.num_samples} samples are bad (DATALOADER.SKIP_BAD_SAMPLES=True "
                    f"skipped each one); the last: {e}"
                ) from None
            logger.warning(
                "Skipping bad sample %s (image_id %s): %s [%d bad sample(s) skipped so far by "
                "this worker; DATALOADER.SKIP_BAD_SAMPLES=True]",
                dataset_dict.get("file_name"),
                dataset_dict.get("image_id"),
                e,
                self.num_skipped,
            )
            return None

    def _map(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        image = _read_image(file_name, self.image_format)
        h, w = image.shape[:2]
        expected = (dataset_dict.get("height", h), dataset_dict.get("width", w))
        if (h, w) != tuple(expected):
            raise BadSampleError(
                f"image {file_name} is {h}x{w} (HxW) but its dataset entry says "
                f"{expected[0]}x{expected[1]}"
            )
        dataset_dict["height"], dataset_dict["width"] = h, w

        if self.is_train:
            pan_file = dataset_dict.get("pan_seg_file_name")
            if pan_file is None:
                raise BadSampleError(f"dataset entry of {file_name} has no 'pan_seg_file_name'")
            segments_info = dataset_dict["segments_info"]
            seg_ids = [int(seg["id"]) for seg in segments_info]
            pan_ids, index = _read_index_map(pan_file, seg_ids, file_name, (h, w))

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            return dataset_dict

        # The label map goes through the same transforms with nearest interpolation (PIL,
        # uint8), so every output pixel is exactly one input pixel's segment: the compact
        # index map when it fits in uint8, else the ids as PNG colors (decoded again after).
        if len(seg_ids) < 255:
            index = transforms.apply_segmentation(index.astype(np.uint8))
        else:
            pan_ids = rgb2id(transforms.apply_segmentation(id2rgb(pan_ids)))
            index, _ = segment_index_map(pan_ids, seg_ids)
        targets = targets_from_index_map(
            index, segments_info, crowd_sem_seg=self.crowd_sem_seg, ignore_label=self.ignore_label
        )
        dataset_dict["sem_seg"] = torch.as_tensor(targets.sem_seg, dtype=torch.int64)
        dataset_dict["instances"] = targets_to_instances(targets)
        dataset_dict.pop("pan_seg_file_name", None)
        dataset_dict.pop("segments_info", None)
        return dataset_dict
