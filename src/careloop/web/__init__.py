"""The HTTP API: FHIR R4 REST over the store, with ingest through the ingest pipeline."""

from careloop.web.app import create_app

__all__ = ["create_app"]
