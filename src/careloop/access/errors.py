"""Refusals of the access layer, with messages safe to show the caller and to log."""

from __future__ import annotations


class AccessDenied(Exception):
    """The principal may not do this. `status` is 403 (forbidden) or 404 (hidden), never 5xx.

    The message names the rule that refused (role, scope, consent, own-record), never data.
    """

    def __init__(self, message: str, *, status: int = 403, code: str = "forbidden") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Erased(Exception):
    """The patient's record was erased; only its tombstone remains (HTTP 410)."""
