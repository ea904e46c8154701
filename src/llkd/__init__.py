"""llkd: distil an LLM teacher into a small classifier with LLKD sample selection.

The Python API (:mod:`llkd.api`) is importable from here: ``Teacher``, ``Student``,
``TeacherLabels`` and ``select``, and for entity recognition ``EntityTeacher`` and
``EntityStudent``. They load lazily, so ``import llkd`` (and the CLI's start)
stays free of torch and transformers until one is used.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["EntityStudent", "EntityTeacher", "Student", "Teacher", "TeacherLabels", "select"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from llkd import api

        return getattr(api, name)
    raise AttributeError(f"module 'llkd' has no attribute '{name}'")
