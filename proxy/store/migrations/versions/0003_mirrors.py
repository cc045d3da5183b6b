"""mirrors: mirror jobs, their runs, the records a policy filtered out; files remember their upstream

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mirrors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("type", sa.String(16), nullable=False, server_default="conda"),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("source_url", sa.Text, nullable=False),
        sa.Column("subdirs", sa.Text, nullable=True),
        sa.Column("cron", sa.String(100), nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False, server_default="4"),
        sa.Column("next_run_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("channel_id", "name", name="uq_mirrors_channel_name"),
    )
    op.create_table(
        "mirror_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.String(64), nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("trigger", sa.String(16), nullable=False, server_default="manual"),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("figures", sa.Text, nullable=False, server_default="{}"),
        sa.Column("generation", sa.Integer, nullable=True),
        sa.Column("owner", sa.String(100), nullable=False, server_default=""),
        sa.Column("heartbeat_at", sa.Float, nullable=True),
    )
    op.create_index("ix_mirror_runs_mirror", "mirror_runs", ["mirror_id", "id"])
    op.create_table(
        "mirror_filtered",
        sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("subdir", sa.String(32), primary_key=True),
        sa.Column("filename", sa.String(400), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False, server_default=""),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
    )
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("mirror_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("source_url", sa.Text, nullable=True))
    op.create_index("ix_files_mirror", "files", ["mirror_id"])


def downgrade() -> None:
    op.drop_index("ix_files_mirror", "files")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("source_url")
        batch.drop_column("mirror_id")
    op.drop_table("mirror_filtered")
    op.drop_index("ix_mirror_runs_mirror", "mirror_runs")
    op.drop_table("mirror_runs")
    op.drop_table("mirrors")
