"""FHIR R4 in and out: parsing, validation, reference resolution and the code systems we speak."""
