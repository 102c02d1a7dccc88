"""Dataset registration (COCO panoptic, Mapillary Vistas, custom, synthetic)."""

# importing .builtin registers the jsis_* datasets
from .builtin import make_synthetic_datasets, register_all, register_synthetic_datasets  # noqa: F401
from .panoptic import (  # noqa: F401
    DatasetNotFoundError,
    load_panoptic_json,
    register_panoptic_dataset,
)
