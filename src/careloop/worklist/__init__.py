"""The clinician triage worklist: each patient's sepsis risk kept as a FHIR snapshot
(`snapshot`), and the rows a nurse or clinician sees of their own patients (`rows`)."""
