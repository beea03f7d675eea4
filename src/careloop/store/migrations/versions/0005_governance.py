"""Model governance: the model registry, its state changes, and the drift history.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("artifact_dir", sa.Text, nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("data_fingerprint", sa.String(64)),
        sa.Column("consent_filter", sa.Text),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("registered_by", sa.String(128), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_model_versions_name_state", "model_versions", ["name", "state"])
    op.create_table(
        "model_state_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_model_state_changes_version", "model_state_changes", ["version"])
    op.create_table(
        "model_drift_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("window", sa.String(64), nullable=False),
        sa.Column("run_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("breaches", sa.Text, nullable=False),
        sa.Column("notified", sa.Boolean, nullable=False),
    )
    op.create_index("ix_model_drift_runs_version", "model_drift_runs", ["version", "run_at"])


def downgrade() -> None:
    op.drop_index("ix_model_drift_runs_version", "model_drift_runs")
    op.drop_table("model_drift_runs")
    op.drop_index("ix_model_state_changes_version", "model_state_changes")
    op.drop_table("model_state_changes")
    op.drop_index("ix_model_versions_name_state", "model_versions")
    op.drop_table("model_versions")
