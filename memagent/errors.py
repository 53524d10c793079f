"""The one error type memagent raises for bad input, and its narrower kinds.

    MemagentError (ValueError)
     ├── InputError        a field of a call's input breaks a rule; the message names the field
     ├── RecordNotFound    an id names no record of that user (also a KeyError)
     └── LLMError          a model failed (memagent.llm.base)
    MissingExtra (ImportError)   an optional part was used without its extra installed
"""

from __future__ import annotations


class MemagentError(ValueError):
    """Base of every error memagent raises on purpose."""


class InputError(MemagentError):
    """A field of the input breaks a rule. ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class RecordNotFound(MemagentError, KeyError):
    """No record with this id exists (for this user, when a user is given)."""

    def __init__(self, record_id: str) -> None:
        self.record_id = record_id
        super().__init__(f"id: no memory record with id {record_id!r}")

    def __str__(self) -> str:  # KeyError would quote the whole message otherwise
        return str(self.args[0])


class MissingExtra(ImportError):
    """An optional part of memagent was used without the extra that installs its dependencies."""

    def __init__(self, extra: str, modules: list[str]) -> None:
        self.extra = extra
        super().__init__(
            f"this part of memagent needs the '{extra}' extra (missing: {', '.join(modules)}): "
            f"pip install 'memagent[{extra}]'"
        )
