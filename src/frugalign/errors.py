"""Errors caused by a user's input. The CLI prints their message, without a traceback, and exits 2.
Also `redact`, which masks the secrets a message or a saved file must never show."""

import re

# a database URL's user information (up to the last @ before its host) and a conninfo's password=...
_URL_USERINFO = re.compile(r"(postgres(?:ql)?://)([^\s/?#'\"]*)@")
_PASSWORD_PARAM = re.compile(r"(password=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the password of every PostgreSQL URL (and any `password=` parameter) in it masked."""
    def userinfo(m: re.Match) -> str:
        user, has_password, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}{':***' if has_password else ''}@"

    return _PASSWORD_PARAM.sub(r"\1***", _URL_USERINFO.sub(userinfo, text))


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
