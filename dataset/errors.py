"""The error for problems with the data on disk (kept apart so that every data module can raise it)."""


class DataError(RuntimeError):
    """A problem with the data on disk that the user has to fix; the message says how."""
