"""Data: label space, dataset registration, mapper, synthetic dataset."""
from .label_space import LabelSpace  # noqa: F401
