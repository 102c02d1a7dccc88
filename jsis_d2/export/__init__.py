"""Export of the whole JSIS-Net panoptic model (ONNX or TorchScript) with a JSON sidecar:
:func:`export_model` (used by ``tools/export_model.py``); the graph is
:class:`~jsis_d2.export.graph.PanopticGraph`. See docs/EXPORT.md."""

from .exporter import ExportMismatchError, export_model

__all__ = ["ExportMismatchError", "export_model"]
