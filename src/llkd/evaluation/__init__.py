"""Evaluation: metrics, data usage, time and memory per stage.

Two layers: ``metrics`` and ``metering`` sit at the bottom (the teacher's calibration and the
trainer use them); the reports (``confidence``, ``plots``, ``run_report``) sit above the
student and read its results. This package imports only the bottom layer, since importing any
submodule runs it (tests/test_layers.py)."""

from llkd.evaluation.metering import StageMeter
from llkd.evaluation.metrics import ClassificationReport, classification_report

__all__ = ["ClassificationReport", "StageMeter", "classification_report"]
