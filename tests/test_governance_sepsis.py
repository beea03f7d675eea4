"""The sepsis model behind the governance interface, on real PhysioNet stays."""

from __future__ import annotations

import json
import tarfile
from datetime import timedelta
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from careloop.governance.adapters import SHIPPED_MODELS, load_governed
from careloop.governance.sepsis_adapter import GovernedSepsis
from careloop.sepsis.features import FEATURE_NAMES
from careloop.sepsis.scoring import score_timeline
from careloop.sources.physionet import read_physionet
from conftest import shared_data

STAYS = 25
SET_A_STAYS = 160


@pytest.fixture(scope="module")
def set_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first stays of set A, in stay order, as a directory: one pass over the archive
    instead of one per read."""
    archive = shared_data("physionet2019/training_setA.tar.gz")
    first: dict[str, bytes] = {}
    with tarfile.open(archive, "r|gz") as members:
        for member in members:
            name = PurePosixPath(member.name).name
            if not member.isfile() or not name.endswith(".psv") or name.startswith("._"):
                continue
            first[name] = members.extractfile(member).read()  # type: ignore[union-attr]
            if len(first) > 2 * SET_A_STAYS:
                first = dict(sorted(first.items())[:SET_A_STAYS])
    directory = tmp_path_factory.mktemp("set_a")
    for name, data in sorted(first.items())[:SET_A_STAYS]:
        (directory / name).write_bytes(data)
    return directory


@pytest.fixture(scope="module")
def governed() -> GovernedSepsis:
    model = load_governed(SHIPPED_MODELS / "sepsis")
    assert isinstance(model, GovernedSepsis)
    return model


@pytest.mark.shared_data
def test_scored_set_of_real_stays_is_consistent(set_a: Path, governed: GovernedSepsis) -> None:
    scored = governed.score_data(set_a, limit=STAYS)
    stays = [stay for stay in read_physionet(set_a, limit=STAYS) if stay.scorable]

    assert scored.model == "sepsis" and scored.unit == "patient-hour"
    assert (
        scored.version
        == governed.version
        == json.loads((SHIPPED_MODELS / "sepsis" / "model.json").read_text())["version"]
    )
    assert scored.rows == sum(stay.hours for stay in stays)
    assert list(dict.fromkeys(scored.patient_ids)) == [stay.stay_id for stay in stays]
    assert scored.labels is not None
    assert np.array_equal(scored.labels, np.concatenate([stay.labels for stay in stays]))
    assert set(scored.groups) == {"sex", "age_band", "unit"}
    assert scored.features is not None and scored.features.shape == (
        scored.rows,
        len(FEATURE_NAMES),
    )
    assert scored.feature_names == tuple(FEATURE_NAMES) == governed.feature_names
    assert scored.row_ids is not None and len(set(scored.row_ids)) == scored.rows
    holdout = governed.training_holdout()  # the stays training kept out, by stay id
    assert holdout is not None and holdout["salt"] == "careloop-holdout-v1"
    assert holdout["share"] == 0.2 and holdout["stays"] > 4000

    # each stay's rows are what the bedside path computes for the same hours
    first = stays[0]
    rows = scored.patient_ids == first.stay_id
    end = first.start + timedelta(hours=first.hours - 1)
    bedside = score_timeline(governed.model, first.timeline, first.start, end, unit=first.unit)
    assert np.allclose(scored.probs[rows], bedside.probabilities)
    assert np.array_equal(scored.alerts[rows], bedside.alert_states)
    for attribute in ("sex", "age_band", "unit"):
        assert len(set(scored.groups[attribute][rows])) == 1  # a stay is one patient


@pytest.mark.shared_data
def test_timed_predictions_time_single_stays(set_a: Path, governed: GovernedSepsis) -> None:
    seconds = governed.timed_predictions(set_a, 3)
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
