"""Evaluation: native PQ (:func:`pq_compute`), the JSIS-Net ``DatasetEvaluator`` with its
accumulator registry, and the ROI-head confusion diagnostic (:func:`roi_confusion_matrix`).

Names are imported lazily so that ``python -m jsis_d2.evaluation.pq`` runs the module once.
"""

import importlib

_WHERE = {  # name -> its submodule
    "pq_compute": "pq",
    "PQStats": "pq",
    "PanopticEvalError": "pq",
    "JSISEvaluator": "evaluator",
    "Accumulator": "accumulator_base",
    "ACCUMULATOR_REGISTRY": "builtin_accumulators",
    "EvalContext": "accumulator_base",
    "rpn_recall": "accumulators",
    "roi_confusion_matrix": "roi_confusion",
}
__all__ = list(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
