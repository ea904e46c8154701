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
