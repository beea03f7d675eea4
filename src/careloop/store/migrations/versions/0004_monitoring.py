"""Remote monitoring: the worker's checkpoint, one row per monitored person plus a shared row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

HASH_LEN = 32


def upgrade() -> None:
    op.create_table(
        "monitoring_workers",
        sa.Column("worker", sa.String(64), primary_key=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "monitoring_persons",
        sa.Column("worker", sa.String(64), primary_key=True),
        sa.Column("patient_hash", sa.String(HASH_LEN), primary_key=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_monitoring_persons_patient", "monitoring_persons", ["patient_hash"])


def downgrade() -> None:
    op.drop_index("ix_monitoring_persons_patient", "monitoring_persons")
    op.drop_table("monitoring_persons")
    op.drop_table("monitoring_workers")
