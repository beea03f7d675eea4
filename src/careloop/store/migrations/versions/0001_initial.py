"""The first schema: settings, wrapped data keys, versioned encrypted resources, search tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

HASH_LEN = 32


def upgrade() -> None:
    op.create_table(
        "store_settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "data_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("owner_hash", sa.String(HASH_LEN), nullable=True, unique=True),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
        sa.Column("master_key_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "resources",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id_hash", sa.String(HASH_LEN), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("is_current", sa.Boolean, nullable=False),
        sa.Column("patient_hash", sa.String(HASH_LEN), nullable=True),
        sa.Column("data_key_id", sa.String(32), sa.ForeignKey("data_keys.key_id"), nullable=True),
        sa.Column("content_hash", sa.String(HASH_LEN), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("last_updated", sa.DateTime(), nullable=False),
        sa.Column("date_start", sa.DateTime(), nullable=True),
        sa.Column("date_end", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("id_hash", "resource_type", "version", name="uq_resource_version"),
    )
    op.create_index(
        "ix_resources_patient", "resources", ["patient_hash", "resource_type", "date_start"]
    )
    op.create_table(
        "search_tokens",
        sa.Column(
            "resource_pk",
            sa.Integer,
            sa.ForeignKey("resources.pk", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("param", sa.String(32), nullable=False),
        sa.Column("value_hash", sa.String(HASH_LEN), nullable=False),
    )
    op.create_index("ix_search_tokens_lookup", "search_tokens", ["param", "value_hash"])
    op.create_index("ix_search_tokens_resource", "search_tokens", ["resource_pk"])


def downgrade() -> None:
    op.drop_table("search_tokens")
    op.drop_table("resources")
    op.drop_table("data_keys")
    op.drop_table("store_settings")
