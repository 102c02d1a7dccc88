"""Panoptic merges picked by name with ``MODEL.JSIS.MERGE`` (paper 2.2 and its alternative).

Every merge has one signature::

    merge(sem_seg, instances, is_thing, *, stuff_area_thresh, instance_score_thresh,
          mask_threshold, overlap_thresh) -> (panoptic_seg int32 [H, W], segments_info)

with the arguments of :func:`jsis_d2.postprocessing.jsis_panoptic_merge` (``sem_seg`` float
[K, H, W], ``instances`` with float ``pred_masks`` [N, H, W] probabilities, ``scores``,
``pred_classes``; ``is_thing`` bool [K]) and every ``MODEL.JSIS`` merge setting as a keyword
(a merge ignores those it does not use). Adding a merge = one function here (or anywhere
imported before the model is built) + ``@PANOPTIC_MERGE_REGISTRY.register()``; its function
name is the ``MODEL.JSIS.MERGE`` value.
"""

from detectron2.utils.registry import Registry

from ..postprocessing import jsis_panoptic_merge, kirillov_panoptic_merge

__all__ = ["PANOPTIC_MERGE_REGISTRY", "get_merge"]

PANOPTIC_MERGE_REGISTRY = Registry("PANOPTIC_MERGE")
PANOPTIC_MERGE_REGISTRY.__doc__ = __doc__


@PANOPTIC_MERGE_REGISTRY.register()
def jsis(sem_seg, instances, is_thing, *, overlap_thresh, **settings):
    """The paper's merge: :func:`~jsis_d2.postprocessing.jsis_panoptic_merge`."""
    return jsis_panoptic_merge(sem_seg, instances, is_thing, **settings)


@PANOPTIC_MERGE_REGISTRY.register()
def kirillov(sem_seg, instances, is_thing, **settings):
    """Kirillov et al. / PanopticFPN: :func:`~jsis_d2.postprocessing.kirillov_panoptic_merge`."""
    return kirillov_panoptic_merge(sem_seg, instances, is_thing, **settings)


def get_merge(name: str):
    """The merge registered as ``name``; ValueError naming MODEL.JSIS.MERGE and the choices."""
    if name not in PANOPTIC_MERGE_REGISTRY:
        names = sorted(k for k, _ in PANOPTIC_MERGE_REGISTRY)
        raise ValueError(f"MODEL.JSIS.MERGE must be one of {names}, got {name!r}")
    return PANOPTIC_MERGE_REGISTRY.get(name)
