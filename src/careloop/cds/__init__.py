"""CDS Hooks 2.0 services: next-best-action cards in the EHR's workflow."""
