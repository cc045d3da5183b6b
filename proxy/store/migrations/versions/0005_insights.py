"""insights: the dependents reverse index (kept at publish time) and download counts

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dependents",
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("file_id", sa.Integer, nullable=False),
        sa.Column("dependent_name", sa.String(200), nullable=False),
        sa.Column("dependent_version", sa.String(100), nullable=False),
        sa.Column("subdir", sa.String(32), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
    )
    op.create_index("ix_dependents_name", "dependents", ["channel_id", "name"])
    op.create_index("ix_dependents_file", "dependents", ["file_id"])
    op.create_table(
        "dependents_state",
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("gen", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "downloads",
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("subdir", sa.String(32), primary_key=True),
        sa.Column("filename", sa.String(400), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_at", sa.Float, nullable=True),
    )
    op.create_index("ix_downloads_name", "downloads", ["channel_id", "name"])


def downgrade() -> None:
    op.drop_index("ix_downloads_name", "downloads")
    op.drop_table("downloads")
    op.drop_table("dependents_state")
    op.drop_index("ix_dependents_file", "dependents")
    op.drop_index("ix_dependents_name", "dependents")
    op.drop_table("dependents")
