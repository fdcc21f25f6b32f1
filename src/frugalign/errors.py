"""Errors caused by a user's input. The CLI prints their message, without a traceback, and exits 2."""


class UserError(Exception):
    """A mistake in what the user gave us (a file, a row, an option): the message says what and where."""


class DataError(UserError):
    """A dataset row or file that cannot be used; the message names the file, the row and the field."""

    def __init__(self, source: str, message: str, row: int | None = None, field: str | None = None):
        where = source
        if row is not None:
            where += f": row {row}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")
        self.source, self.row, self.field = source, row, field
