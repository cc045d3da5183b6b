"""The metadata schema (SQLAlchemy Core). Changes go through a new alembic revision."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

channels = sa.Table(
    "channels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # full path: "team" or "team/sub"
    sa.Column("name", sa.String(160), nullable=False, unique=True),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("private", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("frozen", sa.Boolean, nullable=False, server_default=sa.false()),
    # newest generation written / the one rendered and served to clients
    sa.Column("head_gen", sa.Integer, nullable=False, server_default="0"),
    sa.Column("published_gen", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

generations = sa.Table(
    "generations",
    metadata,
    sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("summary", sa.Text, nullable=False, server_default=""),
)

files = sa.Table(
    "files",
    metadata,
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
    # the repodata record as canonical JSON bytes, ready to splice into indexes
    sa.Column("record", sa.LargeBinary, nullable=False),
    # about.json, paths and readme as JSON bytes (null for records without a blob yet)
    sa.Column("about", sa.LargeBinary, nullable=True),
    sa.Column("contents", sa.LargeBinary, nullable=True),
    sa.Column("license", sa.String(400), nullable=False, server_default=""),
    sa.Column("summary", sa.Text, nullable=False, server_default=""),
    sa.Column("uploaded_at", sa.Float, nullable=False),
    sa.Column("added_gen", sa.Integer, nullable=False),
    sa.Column("removed_gen", sa.Integer, nullable=True),
)
sa.Index("ix_files_render", files.c.channel_id, files.c.subdir, files.c.name, files.c.filename)
sa.Index("ix_files_lookup", files.c.channel_id, files.c.filename)
sa.Index("ix_files_added", files.c.channel_id, files.c.added_gen)
sa.Index("ix_files_removed", files.c.channel_id, files.c.removed_gen)
sa.Index("ix_files_name", files.c.name)

renders = sa.Table(
    "renders",
    metadata,
    sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("subdir", sa.String(32), primary_key=True),
    sa.Column("gen", sa.Integer, primary_key=True),
    sa.Column("records", sa.Integer, nullable=False),
)
