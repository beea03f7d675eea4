"""De-identified exports for research and model training (HIPAA Safe Harbor).

Pure functions over FHIR R4 resource dicts: `Deidentifier.patient_resources` takes one patient's
released resources and returns them de-identified (`safe_harbor` lists the 18 identifiers of
45 CFR 164.514(b)(2) and where each is handled); `export_ndjson` writes them as Bulk Data NDJSON.
"""

from careloop.deid.export import Deidentifier, DeidOptions, DeidReport, export_ndjson
from careloop.deid.safe_harbor import AGE_BAND_URL, Category

__all__ = [
    "AGE_BAND_URL",
    "Category",
    "DeidOptions",
    "DeidReport",
    "Deidentifier",
    "export_ndjson",
]
