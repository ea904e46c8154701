"""Teachers: LLM backends behind one interface, a registry, and an on-disk answer cache."""

from llkd.teacher.base import TEACHER_BACKENDS, TeacherBackend, TeacherAnswer, TeacherFailure, TeacherUnavailable
from llkd.teacher.cache import TeacherCache
from llkd.teacher.answers import TeacherLabels
from llkd.teacher.labeling import build_teacher, label_texts

# Backends register themselves on import.
from llkd.teacher import hf as _hf  # noqa: F401,E402

try:  # the openai backend needs only httpx; keep import failures from hiding the others
    from llkd.teacher import openai as _openai  # noqa: F401
except ImportError:  # pragma: no cover
    pass
try:
    from llkd.teacher import llamacpp as _llamacpp  # noqa: F401
except ImportError:  # pragma: no cover
    pass

__all__ = ["TEACHER_BACKENDS", "TeacherBackend", "TeacherAnswer", "TeacherFailure", "TeacherUnavailable", "TeacherCache", "TeacherLabels", "build_teacher", "label_texts"]
