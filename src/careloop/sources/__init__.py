"""Readers that turn external data sets into careloop's own shapes (timelines, FHIR resources)."""
