"""Identity: who is asking. People sign in with a password and a TOTP code and get a web session
that ends by itself; API clients authenticate with SMART Backend Services (a JWT signed with
their private key) and get a short-lived bearer token.

Every authentication failure raises `AuthenticationError`. Its message is written for the client
and never repeats what the client sent (a password, a code, a token, an assertion), and its
`code` is the machine-readable OAuth 2.0 error (RFC 6749 §5.2, RFC 6750 §3.1) the HTTP layer
puts in its JSON answer. Administrative input that is simply wrong (a malformed user name, a
weak password at enrolment, a private key offered as a client's public key) raises ValueError:
that is a mistake of the operator, not a failed sign-in.

This module stays import-light on purpose (no argon2, no PyJWT): the HTTP layer imports the
error type everywhere, and the submodules import it from here.
"""

from __future__ import annotations

# OAuth 2.0 error codes used by careloop (RFC 6749 §5.2 and RFC 6750 §3.1).
INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
INVALID_GRANT = "invalid_grant"
INVALID_SCOPE = "invalid_scope"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
INVALID_TOKEN = "invalid_token"


class AuthenticationError(Exception):
    """A sign-in, session, token request or bearer token was refused.

    `reason` is safe to show the client; `status` is the HTTP status to answer with; `code` is
    the OAuth 2.0 error code. The constructor never receives what the client presented, so no
    secret can leak through `str(error)`, a log line or a traceback.
    """

    def __init__(self, reason: str, status: int = 401, code: str = INVALID_REQUEST) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code

    def as_oauth(self) -> dict[str, str]:
        """The body of an OAuth 2.0 error response."""
        return {"error": self.code, "error_description": self.reason}

    def __repr__(self) -> str:
        return f"AuthenticationError({self.reason!r}, status={self.status}, code={self.code!r})"


__all__ = [
    "INVALID_CLIENT",
    "INVALID_GRANT",
    "INVALID_REQUEST",
    "INVALID_SCOPE",
    "INVALID_TOKEN",
    "UNSUPPORTED_GRANT_TYPE",
    "AuthenticationError",
]
