"""The AI committee's HTML report: one self-contained file with every section, text escaped,
judged on held-out patients, drift from the recorded history when a store is configured."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from careloop.governance.committee_report import (
    SECTIONS,
    ReportInputs,
    committee_html,
    model_report_command,
)
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore
from test_governance_gate import StandInModel, population, write_stand_ins

HOSTILE_GROUP = "<script>alert(1)</script>"


class Page(HTMLParser):
    """What a test needs to know about a page: its tags, ids, references and text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.references: list[str] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in {"src", "href", "action", "data", "poster"} and value:
                self.references.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-in models 'good' and 'noisy' (the 80+ ranking shuffled) over a data file with a
    race group named like a script tag."""
    import careloop.governance.adapters as adapters

    monkeypatch.setattr(adapters, "load_governed", StandInModel)
    monkeypatch.setenv("CARELOOP_HOME", str(tmp_path / "home"))
    for name in ("CARELOOP_DATABASE_URL", "CARELOOP_MASTER_KEY", "CARELOOP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    people = population(seed=3, patients=1500, oldest=0.1)
    people["race"] = np.where(people["race"] == "Tiny", HOSTILE_GROUP, "Main")
    noisy = people["logit"].copy()
    oldest = people["age_band"] == "80+"
    noisy[oldest] = np.random.default_rng(1).permutation(noisy[oldest])
    data = write_stand_ins(tmp_path / "models", people, noisy=noisy)
    card = tmp_path / "models" / "noisy" / "MODEL_CARD.md"
    card.write_text("# Model card\n\nSee <b>bold</b> & https://example.org/card for more.\n")
    return data


def test_report_has_every_section_is_self_contained_and_escaped(models: Path) -> None:
    folder = models.parent
    inputs = ReportInputs.gather(
        StandInModel(folder / "noisy"),
        models,
        baseline=StandInModel(folder / "good"),
        resamples=30,
        latency_samples=5,
    )
    html_text = committee_html(inputs)
    page = Page(html_text)

    assert {key for key, _ in SECTIONS} <= page.ids
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    external = [r for r in page.references if r.lower().startswith(("http:", "https:", "//"))]
    assert external == []
    images = [r for r in page.references if r.startswith("data:")]
    assert len(images) >= 7  # ROC and calibration per attribute (3 each), alert burden
    assert all(r.startswith("data:image/png;base64,") for r in images)
    assert base64.b64decode(images[0].split(",", 1)[1])[:4] == b"\x89PNG"
    assert HOSTILE_GROUP not in html_text and "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "<b>bold</b>" not in html_text and "&lt;b&gt;bold&lt;/b&gt;" in html_text

    words = page.words
    assert "version readmission-noisy" in words.lower()
    assert "0" * 64 in words and "opt-out honoured" in words  # fingerprint, consent filter
    assert "AUROC 0." in words and "[" in words  # overall figures with intervals
    assert "FLAGGED: AUROC" in words  # the shuffled oldest band, said in words
    assert "NOT JUDGED: too small to judge" in words  # the tiny race group
    assert "not drawn, too small to judge" in words
    assert "No drift runs yet for this version (no store is configured)" in words
    assert "careloop drift run --model readmission-noisy" in words
    assert "GATE BLOCKED: candidate readmission-noisy" in words
    assert "AUROC, age_band=80+" in words


def test_report_judges_held_out_patients_like_the_gate(models: Path) -> None:
    meta_file = models.parent / "good" / "model.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "holdout": {"salt": "r", "share": 0.5}}))
    inputs = ReportInputs.gather(StandInModel(models.parent / "good"), models, resamples=0)
    assert "held-out patients only" in inputs.judged_on
    assert 600 < inputs.fairness.overall.patients < 900
    assert "held-out patients only" in Page(committee_html(inputs)).words


def _drift_run(version: str, day: int, status: str, risk_psi: float):  # type: ignore[no-untyped-def]
    from careloop.governance.drift import DriftResult

    return DriftResult(
        version=version,
        model="readmission",
        window=f"week {day}",
        run_at=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=7 * day),
        status=status,
        rows=500,
        patients=480,
        judged=True,
        feature_psi={"age": risk_psi / 2, "los": risk_psi},
        feature_ks={"age": 0.01},
        risk_psi=risk_psi,
        alert_rate=0.2 + risk_psi / 4,
        reference_alert_rate=0.2,
        alert_rate_change=risk_psi,
        outcomes="complete",
        labelled_rows=500,
        events=100,
        auroc=0.74 - risk_psi / 10,
        reference_auroc=0.74,
        ece=0.03,
        observed_rate=0.2,
        predicted_rate=0.2,
        override_rate=None,
        breaches=["risk PSI 0.30 above 0.25"] if status == "alert" else [],
    )


def test_cli_report_plots_the_recorded_drift_runs(models: Path, tmp_path: Path) -> None:
    from careloop.governance.drift import DriftHistory

    key = MasterKey.from_bytes(bytes(range(32)))
    url = f"sqlite:///{tmp_path / 'careloop.db'}"
    store = ResourceStore.open(url, key)
    history = DriftHistory(store)
    for day, (status, psi) in enumerate([("ok", 0.02), ("warn", 0.12), ("alert", 0.30)]):
        history.record(_drift_run("readmission-good", day, status, psi))
    history.record(_drift_run("readmission-other", 0, "alert", 0.5))
    store.close()
    env = {
        "CARELOOP_DATABASE_URL": url,
        "CARELOOP_MASTER_KEY": base64.b64encode(key.secret).decode(),
    }
    out = tmp_path / "reports" / "good.html"
    result = CliRunner().invoke(
        model_report_command,
        ["--model", str(models.parent / "good"), "--data", str(models), "--out", str(out)],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    page = Page(out.read_text())
    drift = page.words.split("Drift over time", 2)[2].split("Model card")[0]
    assert "week 0" in drift and "week 2" in drift and "ALERT" in drift
    assert "risk PSI 0.30 above 0.25" in drift
    assert "No drift runs" not in drift
    assert sum(r.startswith("data:image/png") for r in page.references) >= 8  # + drift plot
    assert "No baseline was given" in page.words
    assert not list(out.parent.glob(".good.html*"))


def test_cli_report_bad_input_exits_2(models: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "r.html"
    unknown = runner.invoke(
        model_report_command, ["--model", "nope", "--data", str(models), "--out", str(out)]
    )
    assert unknown.exit_code == 2 and "no model 'nope'" in unknown.output
    other_family = models.parent / "good" / "model.json"
    meta = json.loads(other_family.read_text())
    other_family.write_text(json.dumps({**meta, "name": "sepsis"}))
    mixed = runner.invoke(
        model_report_command,
        [
            "--model",
            str(models.parent / "noisy"),
            "--baseline",
            str(models.parent / "good"),
            "--data",
            str(models),
            "--out",
            str(out),
        ],
    )
    assert mixed.exit_code == 2 and "same model only" in mixed.output
    assert not out.exists()
