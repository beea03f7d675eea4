"""The patient portal's logic, without HTTP: what a patient reads about their plan (from a
reviewed phrase catalogue, English and Spanish), their sharing choices as a FHIR Consent and
back, who looked at their record, and their messages to the care team."""
