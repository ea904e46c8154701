"""Selection: which pseudo-labelled samples the student trains on, and with what weight."""

from llkd.selection.selectors import SELECTORS, Selection, SelectionBatch, Selector, build_selector
from llkd.selection.thresholds import AdaptiveThreshold

__all__ = ["SELECTORS", "AdaptiveThreshold", "Selection", "SelectionBatch", "Selector", "build_selector"]
