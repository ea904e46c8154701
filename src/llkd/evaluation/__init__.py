"""Evaluation: metrics, data usage, time and memory per stage. The bottom of the house: the
teacher's calibration, the trainer and the reports (llkd.reporting) all score with it."""

from llkd.evaluation.metering import StageMeter
from llkd.evaluation.metrics import ClassificationReport, classification_report

__all__ = ["ClassificationReport", "StageMeter", "classification_report"]
