"""Evaluation: native PQ (pq_compute) and the JSIS-Net DatasetEvaluator."""
