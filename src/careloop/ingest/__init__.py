"""Ingest: FHIR Bundles and Bulk Data NDJSON from files, archives and HTTP into the store."""

from careloop.ingest.errors import IngestProblem
from careloop.ingest.pipeline import IngestOptions, Ingestor
from careloop.ingest.report import IngestReport

__all__ = ["IngestOptions", "IngestProblem", "IngestReport", "Ingestor"]
