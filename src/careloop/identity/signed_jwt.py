"""Verifying a signed JWT against one known public key: shared by the SMART client assertions
of the token endpoint and the CDS Hooks JWTs of EHRs, which differ only in their claims' rules
and in how they word a refusal."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt


@dataclass(frozen=True)
class Wording:
    """How one kind of token names its problems (messages are safe to show the caller)."""

    noun: str  # e.g. "the client assertion"
    audience: str  # what aud should have been, e.g. "this token endpoint"
    garbled: str  # the message for anything unparseable


def verified_claims(
    token: str,
    jwk: dict[str, Any],
    alg: str,
    *,
    audience: str,
    required: Sequence[str],
    wording: Wording,
    error: Callable[[str], Exception],
) -> dict[str, Any]:
    """The token's claims once its signature (with `alg` only) and its `aud` verify and the
    `required` claims are present. Times are left to the caller, which judges them against its
    own clock and lifetime rules."""
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
        return jwt.decode(
            token,
            key,
            algorithms=[alg],  # one algorithm, already checked against the caller's allow-list
            audience=audience,
            options={
                "require": list(required),
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise error(f"{wording.noun}'s signature does not verify") from None
    except jwt.InvalidAudienceError:
        raise error(f"{wording.noun}'s aud is not {wording.audience}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise error(f"{wording.noun} lacks the {exc.claim} claim") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise error(wording.garbled) from None


def numeric_date(value: object) -> float | None:
    """A NumericDate claim as a finite float, or None (JSON allows NaN, Infinity and huge
    integers, and a bool is not a date)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
        if math.isfinite(number):
            return number
    return None
