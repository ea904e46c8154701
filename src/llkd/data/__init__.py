"""Data: label schemas and validated text sets."""

from llkd.data.errors import DataError
from llkd.data.loading import TextSet, as_text_set, from_records, load_texts
from llkd.data.schema import Label, LabelSchema

__all__ = ["DataError", "Label", "LabelSchema", "TextSet", "as_text_set", "from_records", "load_texts"]
