"""Errors the CLI reports as one line (exit 2); kept free of heavy imports so the CLI can
name them before torch loads. ConfigError (llkd.config), DataError (llkd.data.errors) and
ModelNotFound (llkd.models) live next to the code that raises them."""


class TeacherUnavailable(RuntimeError):
    """The teacher cannot answer any text (server unreachable, credentials refused). Raised
    instead of recording the same failure for every text; answers already cached are kept,
    so a re-run after the fix resumes."""


class CacheError(RuntimeError):
    """The on-disk answer cache cannot be opened or written (read-only, disk full, not a cache).
    The message says what to do; answers already committed are never touched."""


def yaml_problem(e: Exception) -> str:
    """A YAML parse error as one line ('line 3, column 9: mapping values are not allowed here'),
    instead of PyYAML's eight with the source quoted twice."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if mark is None or not problem:
        return " ".join(str(e).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and context_mark is not None and context_mark.line != mark.line:
        return f"{where}: {problem} ({context} at line {context_mark.line + 1})"
    return f"{where}: {problem}" + (f" ({context})" if context else "")
