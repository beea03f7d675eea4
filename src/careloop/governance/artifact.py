"""Writing a model artifact directory whole or not at all: a model, its card and its governance
files are filled into a staging directory beside the target, which replaces the target only once
everything is there. A reader (the service, the registry) never sees half an artifact."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def write_artifact(out: Path, fill: Callable[[Path], None]) -> None:
    """Call `fill(staging)` and move the staging directory to `out`, replacing what was there."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the artifact is read by other users' tools
    try:
        fill(staging)
        if out.exists():
            retired = out.with_name(f".{out.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            out.rename(retired)
            staging.rename(out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def model_version(family: str, data_fingerprint: str, booster_text: str) -> str:
    """A version name that says what a model is and tells models apart: family, the day it was
    trained, its training data and its trees. The same training gives the same name (the
    registry then sees one version); any other model, even on the same data and day, another."""
    trees = hashlib.sha256(booster_text.encode()).hexdigest()[:6]
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    return f"{family}-lgbm-{stamp}-{data_fingerprint[:8]}-{trees}"
