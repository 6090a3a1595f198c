"""The project's own exception types. Messages always say how to fix the problem."""


class RoilabError(Exception):
    """Base class: the CLI and app show these messages to the user as they are."""


class LogFormatError(RoilabError):
    """An uploaded request log cannot be used at all (empty, binary, wrong schema)."""


class ModelPrepError(RoilabError):
    """The embedded model (or a named model) could not be prepared or loaded."""


class SpecError(RoilabError):
    """A variant or technique spec is invalid or cannot run where it was asked to."""


class BackendError(RoilabError):
    """A backend name is unknown or its optional dependency is missing."""


class RunError(RoilabError):
    """A stored run cannot give what was asked of it, e.g. a business case of a run whose
    baseline was never measured."""


class StorageError(RoilabError):
    """The results store failed; the transaction was rolled back, nothing was half-written."""


class RowError(Exception):
    """One row of a log is unusable. Internal to the log parsers, which turn it into a
    RowIssue (line, field, how to fix) and keep going; never reaches the user as is."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
