"""The one door to patient data: identity, role, purpose, consent and audit, checked together."""
