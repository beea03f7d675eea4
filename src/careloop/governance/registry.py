"""The model registry: every trained model versioned with its artifact, card, training data
fingerprint, consent filter, metrics and alert policy, and an audited life cycle.

Embedded, no server: the facts live in the store's database (`model_versions`, and one
`model_state_changes` row per change), the artifacts in a directory (default
`<careloop home>/models/<name>/<version>/`). Registering copies the artifact there and records a
SHA-256 over its files, so a later edit of a registered artifact is detected (`verify`) and
`lookup_artifact` refuses to hand out a tampered one.

Life cycle. A registered version starts as `candidate`. `promote` makes a candidate `active`; at
most one version of a model is active, so the one active before becomes `retired` and is
remembered. `rollback NAME` retires the active version and re-activates the one that was active
before it; repeated, it walks further back. `retire` takes a candidate or the active version out
of use (retiring the active one leaves the model with none active until a promote or a rollback).
A retired version comes back only through `rollback`: `promote` accepts candidates only.

Every change names its actor and a reason and is written, with its history row and an ADMIN audit
record, in one transaction: a change is either fully recorded or did not happen.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from careloop.access.principal import Purpose
from careloop.audit.events import AuditAction, AuditOutcome, AuditRecord
from careloop.audit.log import AuditLog
from careloop.governance.adapters import UnknownModel, model_family, model_meta
from careloop.store.repository import ResourceStore
from careloop.store.schema import model_state_changes, model_versions

MODEL_CARD = "MODEL_CARD.md"
CV_FILE = "cv.json"
NO_CONSENT_FILTER = "none recorded"  # what the registry says when training recorded no filter
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a version or name is a directory
_MAX_REASON = 2000
_CHUNK = 1 << 20


class ModelState(StrEnum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"


class RegistryError(Exception):
    """The registry cannot do what was asked; the message says what and why."""


class UnknownVersion(RegistryError, LookupError):
    """No registered version answers to a name."""


class IllegalStateChange(RegistryError):
    """The asked-for move is not allowed from the version's current state."""


class ArtifactTampered(RegistryError):
    """A registered artifact's files no longer match the checksum recorded at registration."""


@dataclass(frozen=True)
class RegisteredModel:
    version: str
    name: str
    state: ModelState
    artifact_dir: Path
    artifact_sha256: str
    data_fingerprint: str | None
    consent_filter: str
    metrics: dict
    policy: dict
    features: tuple[str, ...]
    registered_at: datetime
    registered_by: str
    state_changed_at: datetime

    @property
    def auroc(self) -> float | None:
        """The headline AUROC of the recorded metrics, if any."""
        return headline_auroc(self.metrics)


@dataclass(frozen=True)
class StateChange:
    version: str
    from_state: ModelState | None  # None for the registration itself
    to_state: ModelState
    actor: str
    reason: str | None
    changed_at: datetime


@dataclass(frozen=True)
class IntegrityResult:
    version: str
    artifact_dir: Path
    expected_sha256: str
    actual_sha256: str | None  # None when the directory is gone
    ok: bool

    def describe(self) -> str:
        if self.ok:
            return f"{self.version}: artifact intact (sha256 {self.expected_sha256})"
        if self.actual_sha256 is None:
            return f"{self.version}: TAMPERED: the artifact directory {self.artifact_dir} is gone"
        return (
            f"{self.version}: TAMPERED: the files in {self.artifact_dir} hash to "
            f"{self.actual_sha256}, registered as {self.expected_sha256}"
        )


def artifact_checksum(directory: Path) -> str:
    """SHA-256 over every file under `directory`: relative names and contents, in name order.

    Names are hashed with their lengths so no two layouts encode alike; a renamed, added,
    removed or edited file changes the checksum.
    """
    digest = hashlib.sha256()
    files = sorted(
        (path.relative_to(directory).as_posix(), path)
        for path in directory.rglob("*")
        if path.is_file()
    )
    for name, path in files:
        encoded = name.encode()
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def headline_auroc(metrics: dict) -> float | None:
    """The model's AUROC: the first found in `metrics`, shallowest first (a number, or a dict
    holding its "mean", "value" or "estimate"), so a holdout figure or a cross-validation mean
    both show; a "model" part comes before its siblings, which may be baselines (the
    readmission metrics hold the LACE-style baseline's figures beside the model's)."""
    level: list[object] = [metrics]
    for _depth in range(4):
        following: list[object] = []
        for node in level:
            if not isinstance(node, dict):
                continue
            own = node.get("model")
            if isinstance(own, dict) and (found := headline_auroc(own)) is not None:
                return found
            if "auroc" in node:
                value = _number(node["auroc"])
                if value is not None:
                    return value
            following.extend(node.values())
        level = following
    return None


def _number(value: object) -> float | None:
    if isinstance(value, dict):
        for key in ("mean", "value", "estimate"):
            if key in value:
                return _number(value[key])
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class ModelRegistry:
    """The registry of one store, with its artifacts under `root`."""

    def __init__(self, store: ResourceStore, root: Path, audit: AuditLog | None = None) -> None:
        self._store = store
        self._engine = store.engine
        self._is_sqlite = store.engine.dialect.name == "sqlite"
        self.root = Path(root)
        self._audit = audit if audit is not None else AuditLog(store)

    # -- registering -----------------------------------------------------------------------------

    def register(self, artifact: Path, *, actor: str) -> RegisteredModel:
        """Copy `artifact` into the registry and record it as a candidate.

        The same version with the same files again is a no-op (returns what is registered);
        the same version with other files is an error.
        """
        _check_actor(actor)
        artifact = Path(artifact)
        facts = _artifact_facts(artifact)
        checksum = artifact_checksum(artifact)
        existing = self.get(facts.version)
        if existing is not None:
            return _same_or_refuse(existing, checksum)
        target = self._copy_in(artifact, facts, checksum)
        now = datetime.now(UTC)
        row = facts.row(target, checksum, actor, now)
        try:
            with self._writing() as conn:
                conn.execute(insert(model_versions).values(**row))
                self._changed(
                    conn, facts.version, None, ModelState.CANDIDATE, actor, "registered", now
                )
                self._audit_change(conn, actor, f"model register {facts.version}: candidate")
        except IntegrityError:
            # registered meanwhile by someone else: the same files make it a no-op
            existing = self.get(facts.version)
            if existing is None:
                raise
            return _same_or_refuse(existing, checksum)
        registered = self.get(facts.version)
        assert registered is not None
        return registered

    def _copy_in(self, artifact: Path, facts: _ArtifactFacts, checksum: str) -> Path:
        """Copy the artifact to `<root>/<name>/<version>` through a temporary directory, so the
        target is either absent or complete; an identical leftover is reused."""
        target = self.root / facts.name / facts.version
        if target.exists():
            if artifact_checksum(target) == checksum:
                return target.resolve()
            raise RegistryError(
                f"{target} exists, is not registered and holds other files than {artifact}; "
                "move it away and register again"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".incoming-{facts.version}-{uuid.uuid4().hex[:8]}"
        try:
            shutil.copytree(artifact, staging)
            if artifact_checksum(staging) != checksum:
                raise RegistryError(f"{artifact} changed while it was being copied; try again")
            os.rename(staging, target)
        except OSError as exc:
            raise RegistryError(f"cannot copy {artifact} into the registry: {exc}") from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return target.resolve()

    # -- reading ---------------------------------------------------------------------------------

    def get(self, version: str) -> RegisteredModel | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(model_versions).where(model_versions.c.version == version)
            ).first()
        return None if row is None else _registered(row)

    def list(self, name: str | None = None) -> list[RegisteredModel]:
        query = select(model_versions).order_by(
            model_versions.c.name, model_versions.c.registered_at, model_versions.c.version
        )
        if name is not None:
            query = query.where(model_versions.c.name == name)
        with self._engine.connect() as conn:
            return [_registered(row) for row in conn.execute(query)]

    def active(self, name: str) -> RegisteredModel | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(model_versions).where(
                    model_versions.c.name == name,
                    model_versions.c.state == ModelState.ACTIVE.value,
                )
            ).first()
        return None if row is None else _registered(row)

    def history(self, version: str | None = None) -> list[StateChange]:
        """State changes, oldest first: of one version, or of all."""
        query = select(model_state_changes).order_by(model_state_changes.c.id)
        if version is not None:
            query = query.where(model_state_changes.c.version == version)
        with self._engine.connect() as conn:
            return [_state_change(row) for row in conn.execute(query)]

    # -- integrity -------------------------------------------------------------------------------

    def verify(self, version: str) -> IntegrityResult:
        """Recompute the artifact's checksum and compare it with the registered one."""
        registered = self._require(version)
        directory = registered.artifact_dir
        actual = artifact_checksum(directory) if directory.is_dir() else None
        return IntegrityResult(
            version=version,
            artifact_dir=directory,
            expected_sha256=registered.artifact_sha256,
            actual_sha256=actual,
            ok=actual == registered.artifact_sha256,
        )

    def lookup_artifact(self, version: str) -> Path | None:
        """The verified artifact directory of a registered version; None when `version` is not
        registered. Raises ArtifactTampered rather than hand out files that changed."""
        if self.get(version) is None:
            return None
        result = self.verify(version)
        if not result.ok:
            raise ArtifactTampered(result.describe())
        return result.artifact_dir

    # -- life cycle ------------------------------------------------------------------------------

    def promote(self, version: str, *, actor: str, reason: str) -> RegisteredModel:
        """Make a candidate the active version of its model; the active one before is retired."""
        _check_actor(actor)
        reason = _checked_reason(reason)
        name = self._require(version).name
        with self._writing() as conn:
            states = self._lock_model(conn, name)
            state = states[version]
            if state is ModelState.ACTIVE:
                raise IllegalStateChange(f"{version} is already active")
            if state is ModelState.RETIRED:
                raise IllegalStateChange(
                    f"{version} is retired; a retired version returns only through "
                    f"`careloop models rollback {name}`, which re-activates the one active before"
                )
            now = datetime.now(UTC)
            previous = [v for v, s in states.items() if s is ModelState.ACTIVE]
            # the new active row first: the rollback order is replayed from this sequence
            self._set_state(conn, version, state, ModelState.ACTIVE, actor, reason, now)
            for old in previous:
                self._set_state(
                    conn, old, ModelState.ACTIVE, ModelState.RETIRED, actor, reason, now
                )
            replaced = f"; {previous[0]}: active -> retired" if previous else ""
            self._audit_change(
                conn, actor, f"model promote {version}: candidate -> active{replaced}"
            )
        return self._require(version)

    def rollback(self, name: str, *, actor: str, reason: str) -> RegisteredModel:
        """Retire the active version of `name` and re-activate the one active before it."""
        _check_actor(actor)
        reason = _checked_reason(reason)
        with self._writing() as conn:
            states = self._lock_model(conn, name)
            if not states:
                raise UnknownVersion(f"no model named {name!r} is registered")
            current = next((v for v, s in states.items() if s is ModelState.ACTIVE), None)
            target = self._rollback_target(conn, name, current)
            if target is None or states.get(target) is not ModelState.RETIRED:
                raise IllegalStateChange(f"{name} has no previously active version to roll back to")
            now = datetime.now(UTC)
            detail = f"model rollback {name}: {target}: retired -> active"
            if current is not None:
                self._set_state(
                    conn, current, ModelState.ACTIVE, ModelState.RETIRED, actor, reason, now
                )
                detail += f"; {current}: active -> retired"
            self._set_state(conn, target, ModelState.RETIRED, ModelState.ACTIVE, actor, reason, now)
            self._audit_change(conn, actor, detail)
        return self._require(target)

    def retire(self, version: str, *, actor: str, reason: str) -> RegisteredModel:
        """Take a candidate or the active version out of use."""
        _check_actor(actor)
        reason = _checked_reason(reason)
        name = self._require(version).name
        with self._writing() as conn:
            state = self._lock_model(conn, name)[version]
            if state is ModelState.RETIRED:
                raise IllegalStateChange(f"{version} is already retired")
            now = datetime.now(UTC)
            self._set_state(conn, version, state, ModelState.RETIRED, actor, reason, now)
            self._audit_change(conn, actor, f"model retire {version}: {state} -> retired")
        return self._require(version)

    def _rollback_target(self, conn: Connection, name: str, current: str | None) -> str | None:
        """The version active before the current one, replayed from the history.

        The history of `name` is replayed as a stack of activations: a promote pushes; an
        active version retired while on top (retired directly or by a rollback) is popped; one
        retired because another was promoted over it stays, below the newcomer. The target is
        the version under the active one, or the top when none is active.
        """
        rows = conn.execute(
            select(
                model_state_changes.c.version,
                model_state_changes.c.from_state,
                model_state_changes.c.to_state,
            )
            .join(model_versions, model_versions.c.version == model_state_changes.c.version)
            .where(model_versions.c.name == name)
            .order_by(model_state_changes.c.id)
        ).all()
        stack: list[str] = []
        for version, from_state, to_state in rows:
            if to_state == ModelState.ACTIVE:
                if version in stack:
                    stack.remove(version)
                stack.append(version)
            elif from_state == ModelState.ACTIVE and stack and stack[-1] == version:
                stack.pop()  # retired while on top: directly, or by a rollback
        if current is not None:
            if not stack or stack[-1] != current:
                return None
            stack.pop()
        return stack[-1] if stack else None

    # -- writing helpers -------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One transaction holding the write lock from its first read (SQLite: BEGIN
        IMMEDIATE, which the audit log's append inside it also needs)."""
        with self._engine.connect() as conn:
            if self._is_sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _lock_model(self, conn: Connection, name: str) -> dict[str, ModelState]:
        """The states of every version of `name`, locked against a concurrent change
        (PostgreSQL: FOR UPDATE, in version order so two changers cannot deadlock)."""
        rows = conn.execute(
            select(model_versions.c.version, model_versions.c.state)
            .where(model_versions.c.name == name)
            .order_by(model_versions.c.version)
            .with_for_update()
        ).all()
        return {version: ModelState(state) for version, state in rows}

    def _set_state(
        self,
        conn: Connection,
        version: str,
        from_state: ModelState,
        to_state: ModelState,
        actor: str,
        reason: str,
        now: datetime,
    ) -> None:
        conn.execute(
            update(model_versions)
            .where(model_versions.c.version == version)
            .values(state=to_state.value, state_changed_at=now)
        )
        self._changed(conn, version, from_state, to_state, actor, reason, now)

    @staticmethod
    def _changed(
        conn: Connection,
        version: str,
        from_state: ModelState | None,
        to_state: ModelState,
        actor: str,
        reason: str | None,
        now: datetime,
    ) -> None:
        conn.execute(
            insert(model_state_changes).values(
                version=version,
                from_state=None if from_state is None else from_state.value,
                to_state=to_state.value,
                actor=actor,
                reason=reason,
                changed_at=now,
            )
        )

    def _audit_change(self, conn: Connection, actor: str, detail: str) -> None:
        record = AuditRecord(
            action=AuditAction.ADMIN,
            outcome=AuditOutcome.SUCCESS,
            agent=actor,
            role="admin",
            agent_kind="local" if actor.startswith("local:") else "user",
            fhir_user=None,
            purpose=Purpose.OPERATIONS.value,
            patient_id=None,
            detail=detail,
        )
        self._audit.append(record, connection=conn)

    def _require(self, version: str) -> RegisteredModel:
        registered = self.get(version)
        if registered is None:
            raise UnknownVersion(
                f"no registered model version {version!r} (see `careloop models list`)"
            )
        return registered


# -- reading an artifact ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ArtifactFacts:
    """What registration records about an artifact, read from its files."""

    version: str
    name: str
    data_fingerprint: str | None
    consent_filter: str
    metrics: dict
    policy: dict
    features: tuple[str, ...]

    def row(self, target: Path, checksum: str, actor: str, now: datetime) -> dict:
        return {
            "version": self.version,
            "name": self.name,
            "state": ModelState.CANDIDATE.value,
            "artifact_dir": str(target),
            "artifact_sha256": checksum,
            "data_fingerprint": self.data_fingerprint,
            "consent_filter": self.consent_filter,
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "policy": json.dumps(self.policy, sort_keys=True),
            "features": json.dumps(list(self.features)),
            "registered_at": now,
            "registered_by": actor,
            "state_changed_at": now,
        }


def _artifact_facts(artifact: Path) -> _ArtifactFacts:
    if not artifact.is_dir():
        raise RegistryError(f"{artifact} is not a directory holding a model")
    try:
        meta = model_meta(artifact)
    except UnknownModel as exc:
        raise RegistryError(str(exc)) from None
    if not (artifact / MODEL_CARD).is_file():
        raise RegistryError(
            f"{artifact} has no {MODEL_CARD}: a model is registered only with its model card"
        )
    version = str(meta["version"])
    name = model_family(meta)
    for label, value in (("version", version), ("name", name)):
        if not _SAFE_NAME.fullmatch(value) or value in {".", ".."}:
            raise RegistryError(
                f"{artifact / 'model.json'}: the model {label} {value!r} must be letters, "
                "digits, '.', '_' or '-' (at most 128), starting with a letter or digit"
            )
    if len(name) > 64:
        raise RegistryError(f"{artifact / 'model.json'}: the model name is over 64 characters")
    trained = meta.get("trained") if isinstance(meta.get("trained"), dict) else {}
    assert isinstance(trained, dict)
    return _ArtifactFacts(
        version=version,
        name=name,
        data_fingerprint=_fingerprint(artifact, trained.get("fingerprint")),
        consent_filter=_consent_filter(trained.get("consent_filter")),
        metrics=_metrics(artifact, meta),
        policy=_dict_field(artifact, meta, "policy"),
        features=_features(artifact, meta),
    )


def _fingerprint(artifact: Path, value: object) -> str | None:
    if value is None:
        return None
    text = str(value).removeprefix("sha256:")
    if len(text) > 64:
        raise RegistryError(
            f"{artifact / 'model.json'}: trained.fingerprint is not a SHA-256 hex digest"
        )
    return text


def _consent_filter(value: object) -> str:
    if value is None or value == "" or value == {}:
        return NO_CONSENT_FILTER
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _metrics(artifact: Path, meta: dict) -> dict:
    """model.json's metrics, else the cross-validation summary beside it, else none."""
    if isinstance(meta.get("metrics"), dict):
        return dict(meta["metrics"])
    cv_path = artifact / CV_FILE
    if cv_path.is_file():
        try:
            summary = json.loads(cv_path.read_text()).get("summary")
        except (OSError, ValueError, AttributeError) as exc:
            raise RegistryError(f"{cv_path} cannot be read: {exc}") from None
        if isinstance(summary, dict):
            return {"cross_validation": summary}
    return {}


def _dict_field(artifact: Path, meta: dict, key: str) -> dict:
    value = meta.get(key, {})
    if not isinstance(value, dict):
        raise RegistryError(f"{artifact / 'model.json'}: {key!r} must be an object")
    return dict(value)


def _features(artifact: Path, meta: dict) -> tuple[str, ...]:
    value = meta.get("features", [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RegistryError(f"{artifact / 'model.json'}: 'features' must be a list of names")
    return tuple(value)


# -- rows and checks -------------------------------------------------------------------------------


def _registered(row) -> RegisteredModel:  # type: ignore[no-untyped-def]
    return RegisteredModel(
        version=row.version,
        name=row.name,
        state=ModelState(row.state),
        artifact_dir=Path(row.artifact_dir),
        artifact_sha256=row.artifact_sha256,
        data_fingerprint=row.data_fingerprint,
        consent_filter=row.consent_filter or NO_CONSENT_FILTER,
        metrics=json.loads(row.metrics),
        policy=json.loads(row.policy),
        features=tuple(json.loads(row.features)),
        registered_at=row.registered_at,
        registered_by=row.registered_by,
        state_changed_at=row.state_changed_at,
    )


def _state_change(row) -> StateChange:  # type: ignore[no-untyped-def]
    return StateChange(
        version=row.version,
        from_state=None if row.from_state is None else ModelState(row.from_state),
        to_state=ModelState(row.to_state),
        actor=row.actor,
        reason=row.reason,
        changed_at=row.changed_at,
    )


def _same_or_refuse(existing: RegisteredModel, checksum: str) -> RegisteredModel:
    if existing.artifact_sha256 == checksum:
        return existing
    raise RegistryError(f"version {existing.version} is already registered with other contents")


def _check_actor(actor: str) -> None:
    if not actor or not actor.strip() or len(actor) > 128:
        raise RegistryError("an actor (who does this, at most 128 characters) is required")


def _checked_reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise RegistryError("a reason is required for every change of a model's state")
    if len(text) > _MAX_REASON:
        raise RegistryError(f"the reason is over {_MAX_REASON} characters")
    return text
