"""Dataset registration (COCO panoptic, Mapillary Vistas, custom, synthetic)."""

from . import builtin  # noqa: F401  (registers the jsis_* datasets at import)
from .builtin import (  # noqa: F401
    make_synthetic_datasets,
    register_all,
    register_synthetic_datasets,
)
from .panoptic import (  # noqa: F401
    DatasetNotFoundError,
    load_panoptic_json,
    panoptic_metadata,
    register_panoptic_dataset,
)
