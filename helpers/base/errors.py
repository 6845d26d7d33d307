"""The errors a user has to fix (bad data, a missing file, a wrong flag): the scripts print their
message, which says what to do, instead of a traceback."""


class UserError(RuntimeError):
    """A problem the user has to fix; the message names the file or flag and says what to do."""


class DataError(UserError):
    """A problem with the data on disk."""
