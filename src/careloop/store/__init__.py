"""The encrypted patient store: FHIR resources at rest, versioned, searchable by blind indexes."""

from careloop.store.repository import (
    ResourceStore,
    StoredResource,
    StoreError,
    WriteOutcome,
    WriteResult,
)

__all__ = ["ResourceStore", "StoreError", "StoredResource", "WriteOutcome", "WriteResult"]
