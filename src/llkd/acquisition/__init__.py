"""Acquisition: which unanswered texts to ask the teacher about next (budgeted distillation).

Strategies sit behind one registry (:data:`ACQUISITIONS`), like the selectors; each is a
small object over plain arrays (student probabilities, embeddings), so it is testable without
a model. :func:`seed_rows` picks the first, label-free round."""

from llkd.acquisition.strategies import ACQUISITIONS, AcquisitionContext, Strategy, build_strategy, seed_rows

__all__ = ["ACQUISITIONS", "AcquisitionContext", "Strategy", "build_strategy", "seed_rows"]
