"""llkd: distil an LLM teacher into a small classifier with LLKD sample selection."""

__version__ = "0.1.0"
