"""The one response class of the FHIR API: JSON rendered by orjson, typed application/fhir+json."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

FHIR_JSON = "application/fhir+json"


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
