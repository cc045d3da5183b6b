"""initial schema: channels, generations, files, renders

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(160), nullable=False, unique=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("private", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("frozen", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("head_gen", sa.Integer, nullable=False, server_default="0"),
        sa.Column("published_gen", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "generations",
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("summary", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("subdir", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(400), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("build", sa.String(200), nullable=False, server_default=""),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("md5", sa.String(32), nullable=False, server_default=""),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("record", sa.LargeBinary, nullable=False),
        sa.Column("about", sa.LargeBinary, nullable=True),
        sa.Column("contents", sa.LargeBinary, nullable=True),
        sa.Column("license", sa.String(400), nullable=False, server_default=""),
        sa.Column("summary", sa.Text, nullable=False, server_default=""),
        sa.Column("uploaded_at", sa.Float, nullable=False),
        sa.Column("added_gen", sa.Integer, nullable=False),
        sa.Column("removed_gen", sa.Integer, nullable=True),
    )
    op.create_index("ix_files_render", "files", ["channel_id", "subdir", "name", "filename"])
    op.create_index("ix_files_lookup", "files", ["channel_id", "filename"])
    op.create_index("ix_files_added", "files", ["channel_id", "added_gen"])
    op.create_index("ix_files_removed", "files", ["channel_id", "removed_gen"])
    op.create_index("ix_files_name", "files", ["name"])
    op.create_table(
        "renders",
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("subdir", sa.String(32), primary_key=True),
        sa.Column("gen", sa.Integer, primary_key=True),
        sa.Column("records", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for table in ("renders", "files", "generations", "channels"):
        op.drop_table(table)
