"""Evaluation: metrics, data usage, time and memory per stage."""

from llkd.evaluation.metering import StageMeter
from llkd.evaluation.metrics import ClassificationReport, classification_report

__all__ = ["ClassificationReport", "StageMeter", "classification_report"]
