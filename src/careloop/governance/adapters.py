"""From a model reference to a governed model: find the artifact a version names, and load it as
the model family it belongs to.

A reference is a directory holding a `model.json`, a version registered in the model registry, or
the version of a model shipped in the repository's `models/` directory, in that order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from careloop.governance.scored import GovernedModel

SHIPPED_MODELS = Path(__file__).resolve().parents[3] / "models"
META_FILE = "model.json"

RegistryLookup = Callable[[str], Path | None]


class UnknownModel(LookupError):
    """No artifact answers to a reference."""


def resolve_artifact(reference: str, registry_lookup: RegistryLookup | None = None) -> Path:
    """The artifact directory `reference` names (see the module docstring)."""
    as_path = Path(reference)
    if (as_path / META_FILE).is_file():
        return as_path
    if registry_lookup is not None:
        registered = registry_lookup(reference)
        if registered is not None:
            return registered
    for shipped in sorted(SHIPPED_MODELS.glob(f"*/{META_FILE}")):
        if model_meta(shipped.parent).get("version") == reference:
            return shipped.parent
    raise UnknownModel(
        f"no model {reference!r}: give a model directory, a registered version "
        "(`careloop models list`) or a shipped one"
    )


def model_meta(artifact: Path) -> dict[str, object]:
    """The artifact's metadata (`model.json`), with a readable error when it is not one."""
    path = artifact / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise UnknownModel(f"{artifact} holds no {META_FILE}: it is not a model") from None
    except (OSError, ValueError) as exc:
        raise UnknownModel(f"{path} cannot be read as model metadata: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("version"), str):
        raise UnknownModel(f"{path} names no model version")
    return meta


def model_family(meta: dict[str, object]) -> str:
    """'sepsis' or 'readmission': from the metadata's `name`, or, for artifacts written before
    names were recorded, the version's prefix."""
    name = meta.get("name")
    if isinstance(name, str):
        return name
    return str(meta["version"]).split("-", 1)[0]


def load_governed(artifact: Path) -> GovernedModel:
    """The model in `artifact` behind the governance interface."""
    family = model_family(model_meta(artifact))
    if family == "readmission":
        from careloop.readmission.governed import GovernedReadmission

        return GovernedReadmission.load(artifact)
    if family == "sepsis":
        from careloop.governance.sepsis_adapter import GovernedSepsis

        return GovernedSepsis.load(artifact)
    raise UnknownModel(f"{artifact} holds a {family!r} model, which careloop cannot govern")
