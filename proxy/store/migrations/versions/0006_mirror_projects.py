"""python mirrors: the projects a mirror brings (requirements-style JSON list)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mirrors") as batch:
        batch.add_column(sa.Column("projects", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mirrors") as batch:
        batch.drop_column("projects")
