"""The exception tree of ust. Every error a user can cause is a UstError."""


class UstError(Exception):
    """Base class of every error ust reports to its user."""


class TraceFormatError(UstError):
    """A trace could not be read: names the file and the byte offset."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if offset is not None:
                where += f" at byte {offset}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.offset = offset


class FilterError(UstError):
    """An invalid filter expression: names the position of the error."""

    def __init__(self, message: str, expression: str = "", position: int | None = None):
        text = message
        if position is not None:
            text = f"{message} at position {position} in filter {expression!r}"
        super().__init__(text)
        self.reason = message
        self.expression = expression
        self.position = position


class SessionError(UstError):
    """A control request failed (unknown session, duplicate name, ...)."""


class DaemonError(UstError):
    """A daemon could not be reached or started."""


class ProtocolError(UstError):
    """A malformed control-protocol message."""
