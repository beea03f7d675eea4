"""Alert burden: the indicator a CDS card had before the alert budget demoted it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cds_cards") as batch:
        batch.add_column(sa.Column("demoted_from", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cds_cards") as batch:
        batch.drop_column("demoted_from")
