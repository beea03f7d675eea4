"""CDS Hooks: registered EHR clients, JWT replay protection, hook calls, cards and feedback.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

HASH_LEN = 32


def upgrade() -> None:
    op.create_table(
        "cds_clients",
        sa.Column("issuer", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("jku_allowlist", sa.String(4096), nullable=False),
        sa.Column("jwks", sa.String(16384), nullable=True),
        sa.Column("fhir_servers", sa.String(4096), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "cds_jwt_ids",
        sa.Column("jti_hash", sa.String(64), primary_key=True),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "cds_hook_calls",
        sa.Column("hook_instance", sa.String(64), primary_key=True),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("patient_hash", sa.String(HASH_LEN), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "cds_cards",
        sa.Column("card_uuid", sa.String(36), primary_key=True),
        sa.Column(
            "hook_instance",
            sa.String(64),
            sa.ForeignKey("cds_hook_calls.hook_instance"),
            nullable=False,
        ),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("card_key", sa.String(128), nullable=False),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("playbook", sa.String(128), nullable=True),
        sa.Column("unit", sa.String(128), nullable=True),
        sa.Column("patient_hash", sa.String(HASH_LEN), nullable=True),
        sa.Column("record_ref", sa.String(128), nullable=True),
        sa.Column("suggestion_ids", sa.String(2048), nullable=False),
        sa.Column("override_reasons", sa.String(4096), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_cds_cards_patient", "cds_cards", ["patient_hash", "created_at"])
    op.create_table(
        "cds_feedback",
        sa.Column(
            "card_uuid",
            sa.String(36),
            sa.ForeignKey("cds_cards.card_uuid"),
            primary_key=True,
        ),
        sa.Column("outcome_timestamp", sa.DateTime(), primary_key=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("accepted_suggestions", sa.String(2048), nullable=False),
        sa.Column("override_reason", sa.String(64), nullable=True),
        sa.Column("override_comment", sa.LargeBinary, nullable=True),
        sa.Column("issuer", sa.String(255), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    for table in ("cds_feedback", "cds_cards", "cds_hook_calls", "cds_jwt_ids", "cds_clients"):
        op.drop_table(table)
