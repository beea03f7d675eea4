"""Every form of the web pages under generated input (hypothesis): whatever arrives (any bytes,
any fields, any length, a path segment of anything), a page answers with a redirect or a 4xx
page, never a 500, never a script of the sender's, and nothing is half written.

The app is the real one over a real SQLite store with a small synthetic population; the
browser is not needed to send a form, so these run through Starlette's test client.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careloop.identity import totp
from careloop.identity.users import UserDirectory, demo_totp_secret
from careloop.ingest import IngestOptions, Ingestor
from careloop.store.crypto import MasterKey
from careloop.store.repository import ResourceStore
from careloop.synth import write_population
from careloop.web.app import AppSettings, create_app
from careloop.web.auth import SESSION_COOKIE
from careloop.web.ui.framework import CSRF_FIELD, form_token

BASE = "https://testserver"  # the session cookie is Secure: the client must speak https
PASSWORD = "a long enough password for tests"
# (who, path template): every POST of the pages; {id} is filled with generated text
FORMS = [
    ("patient", "/app/language"),
    ("patient", "/app/me/messages"),
    ("patient", "/app/me/sharing"),
    ("patient", "/app/me/erasure"),
    ("nurse", "/app/worklist/alerts/{id}/acknowledge"),
    ("nurse", "/app/worklist/alerts/{id}/snooze"),
    ("nurse", "/app/patients/{id}/cards/{id}/feedback"),
    ("nurse", "/app/inbox/{id}/reply"),
]
FORM = "application/x-www-form-urlencoded"
FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # the site is module-scoped, shared on purpose
NEVER_SHOWN = ("Traceback", "sqlalchemy", PASSWORD)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict, str]]:
    home = tmp_path_factory.mktemp("ui-forms")
    write_population(home / "population", patients=3, seed=5)
    store = ResourceStore.open(f"sqlite:///{home / 'store.db'}", MasterKey.from_bytes(b"f" * 32))
    report = Ingestor(store, IngestOptions(workers=1)).ingest_paths([home / "population"])
    assert report.ok
    patient_id = next(iter(store.search("Patient", count=1).resources)).body["id"]
    users = UserDirectory(store)
    users.add("patient-f", "patient", PASSWORD, f"Patient/{patient_id}", totp_secret=_secret("p"))
    users.add("nurse-f", "nurse", PASSWORD, "Practitioner/nurse-f", totp_secret=_secret("n"))
    app = create_app(store, AppSettings(public_url=BASE, login_burst=1000))
    with TestClient(app, base_url=BASE) as client:
        tokens = {
            "patient": _sign_in(client, "patient-f", _secret("p")),
            "nurse": _sign_in(client, "nurse-f", _secret("n")),
        }
        yield client, tokens, patient_id
    store.close()


def _secret(tag: str) -> str:
    return demo_totp_secret(f"ui-forms-{tag}")


def _sign_in(client: TestClient, username: str, secret: str) -> str:
    code = totp.code_at(secret, datetime.now(UTC))
    answer = client.post(
        "/app/login",
        data={"username": username, "password": PASSWORD, "code": code},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return answer.cookies[SESSION_COOKIE]


def _post(client: TestClient, token: str, path: str, body: bytes, content_type: str):  # noqa: ANN202
    client.cookies.clear()  # only the session named here
    return client.post(
        path,
        content=body,
        headers={"content-type": content_type, "cookie": f"{SESSION_COOKIE}={token}"},
        follow_redirects=False,
    )


def _check(answer) -> None:  # noqa: ANN001
    """A redirect or a 4xx page; no internals; no markup of the sender's, which would show as
    a script element (the pages have none of their own)."""
    assert answer.status_code < 500, answer.text[:500]
    assert answer.status_code in (303, 400, 403, 404, 409, 413, 415), answer.status_code
    for needle in NEVER_SHOWN:
        assert needle not in answer.text, needle
    assert "<script" not in answer.text.lower()


field_names = st.sampled_from(
    ["lang", "next", "message", "text", "hours", "outcome", "reason", "comment", "accept",
     "confirm", "vital-signs:care-team", "all:research", "x"]
)  # fmt: skip
field_values = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["es", "en", "1", "4", "8", "accept", "override", "<script>alert(1)</script>"]),
    st.text(min_size=3000, max_size=3000),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    form=st.sampled_from(FORMS),
    segment=st.text(min_size=1, max_size=90),
    fields=st.dictionaries(field_names, field_values, max_size=6),
    with_token=st.booleans(),
)
def test_generated_forms_get_a_clear_answer(site, form, segment, fields, with_token) -> None:
    client, tokens, _patient = site
    who, template = form
    path = template.replace("{id}", quote(segment, safe=""))
    if with_token:
        fields = {**fields, CSRF_FIELD: form_token(tokens[who])}
    body = "&".join(f"{quote(k)}={quote(v)}" for k, v in fields.items()).encode()
    answer = _post(client, tokens[who], path, body, FORM)
    _check(answer)
    if not with_token:  # refused before anything is read further: forged, unknown, or too big
        assert answer.status_code in (403, 404, 413), answer.status_code


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    form=st.sampled_from(FORMS),
    body=st.binary(max_size=2048),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "multipart/form-data", "application/json", ""]
    ),
)
def test_arbitrary_bytes_are_refused_cleanly(site, form, body, content_type) -> None:
    client, tokens, _patient = site
    who, template = form
    answer = _post(client, tokens[who], template.replace("{id}", "x1"), body, content_type)
    _check(answer)


def test_an_oversized_form_is_refused_with_413(site) -> None:
    client, tokens, _patient = site
    body = (f"{CSRF_FIELD}={form_token(tokens['patient'])}&message=" + "a" * 70_000).encode()
    answer = _post(client, tokens["patient"], "/app/me/messages", body, FORM)
    assert answer.status_code == 413
    assert "longer than careloop accepts" in answer.text


def test_a_good_message_is_written_and_a_bad_one_writes_nothing(site) -> None:
    """The control for the generated cases: the same client and session do reach the page."""
    client, tokens, patient_id = site
    token = tokens["patient"]
    store = client.app.state.fhir.store  # type: ignore[attr-defined]

    def messages() -> int:
        return len(list(store.patient_compartment(patient_id, ("Communication",))))

    before = messages()
    good = f"{CSRF_FIELD}={form_token(token)}&message=" + quote("Can I take my pills with food?")
    answer = _post(client, token, "/app/me/messages", good.encode(), FORM)
    assert answer.status_code == 303 and "/app/login" not in answer.headers["location"]
    assert messages() == before + 1
    too_long = f"{CSRF_FIELD}={form_token(token)}&message=" + "a" * 2001
    answer = _post(client, token, "/app/me/messages", too_long.encode(), FORM)
    assert answer.status_code == 400
    assert "2,000" in answer.text or "2000" in answer.text
    assert messages() == before + 1
