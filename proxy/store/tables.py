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
    # the policy that filters what the channel publishes (policies.id; 0004)
    sa.Column("policy_id", sa.Integer, nullable=True),
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
    # mirrored files: the mirror that brought them and where their bytes are fetched from
    sa.Column("mirror_id", sa.Integer, nullable=True),
    sa.Column("source_url", sa.Text, nullable=True),
    # conda: the record as its CEP-16 shard holds it (msgpack, digests as bytes) and its timestamp
    # (0: none), made at ingest (render.shard_entry); null in rows older than migration 0007
    sa.Column("shard_entry", sa.LargeBinary, nullable=True),
    sa.Column("record_ts", sa.BigInteger, nullable=True),
)
sa.Index("ix_files_render", files.c.channel_id, files.c.subdir, files.c.name, files.c.filename)
sa.Index("ix_files_lookup", files.c.channel_id, files.c.filename)
sa.Index("ix_files_added", files.c.channel_id, files.c.added_gen)
sa.Index("ix_files_removed", files.c.channel_id, files.c.removed_gen)
sa.Index("ix_files_name", files.c.name)
sa.Index("ix_files_mirror", files.c.mirror_id)
sa.Index("ix_files_artifact", files.c.channel_id, files.c.type, files.c.name, files.c.removed_gen)

renders = sa.Table(
    "renders",
    metadata,
    sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("subdir", sa.String(32), primary_key=True),
    sa.Column("gen", sa.Integer, primary_key=True),
    sa.Column("records", sa.Integer, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    # "user" or "service" (a service account: tokens only, for CI and mirrors)
    sa.Column("kind", sa.String(16), nullable=False, server_default="user"),
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # sha256 of the secret: the secret itself is shown once and never stored
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    # JSON list of permissions the token is limited to; null: all of its user's
    sa.Column("scopes", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    # a channel permission (read/write/manage) on a channel, or a global attribute (channel_id 0)
    sa.Column("channel_id", sa.Integer, primary_key=True),
    sa.Column("permission", sa.String(64), primary_key=True),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("action", sa.String(200), nullable=False),
    sa.Column("target", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("client", sa.String(64), nullable=False, server_default=""),
)
sa.Index("ix_audit_at", audit.c.at)

mirrors = sa.Table(
    "mirrors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("type", sa.String(16), nullable=False, server_default="conda"),
    # "passive" (records; bytes on first request) or "active" (records and bytes up front)
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("source_url", sa.Text, nullable=False),
    # JSON list of subdirs; null: all that the source has
    sa.Column("subdirs", sa.Text, nullable=True),
    # 5-field cron expression, UTC
    sa.Column("cron", sa.String(100), nullable=False),
    # blob downloads at once in active mode
    sa.Column("concurrency", sa.Integer, nullable=False, server_default="4"),
    # the next scheduled run (epoch seconds), kept so the schedule survives a restart
    sa.Column("next_run_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # the mirror's own policy (policies.id; 0004); null: its channel's policy applies
    sa.Column("policy_id", sa.Integer, nullable=True),
    # python mirrors: JSON list of requirements ("requests>=2", "idna") naming what is mirrored (0006)
    sa.Column("projects", sa.Text, nullable=True),
    sa.UniqueConstraint("channel_id", "name", name="uq_mirrors_channel_name"),
)

mirror_runs = sa.Table(
    "mirror_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"), nullable=False),
    # queued, running, stopping, stopped, completed, failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("step", sa.String(64), nullable=False, server_default=""),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    # manual, schedule, create
    sa.Column("trigger", sa.String(16), nullable=False, server_default="manual"),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    # JSON: records seen/published/filtered, per-reason counts, files and bytes done/total
    sa.Column("figures", sa.Text, nullable=False, server_default="{}"),
    sa.Column("generation", sa.Integer, nullable=True),
    # the process running it (host:pid:boot), so a crashed run is recognised at start-up
    sa.Column("owner", sa.String(100), nullable=False, server_default=""),
    sa.Column("heartbeat_at", sa.Float, nullable=True),
)
sa.Index("ix_mirror_runs_mirror", mirror_runs.c.mirror_id, mirror_runs.c.id)

mirror_filtered = sa.Table(
    "mirror_filtered",
    metadata,
    # the records of the mirror's last run that its policy left out, and why
    sa.Column("mirror_id", sa.Integer, sa.ForeignKey("mirrors.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("subdir", sa.String(32), primary_key=True),
    sa.Column("filename", sa.String(400), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("version", sa.String(100), nullable=False, server_default=""),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    # bumped by every edit; the rules of each version stay in policy_versions
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # JSON list of validated rules (conda_platform_plugin/policy.py)
    sa.Column("rules", sa.Text, nullable=False, server_default="[]"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

policy_versions = sa.Table(
    "policy_versions",
    metadata,
    sa.Column("policy_id", sa.Integer, sa.ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("rules", sa.Text, nullable=False, server_default="[]"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False, server_default=""),
)

cves = sa.Table(
    "cves",
    metadata,
    # the OSV id (PYSEC-…, GHSA-…, CVE-…); aliases hold the others
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("aliases", sa.Text, nullable=False, server_default="[]"),
    sa.Column("summary", sa.Text, nullable=False, server_default=""),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("severity", sa.String(16), nullable=True),
    sa.Column("published", sa.String(64), nullable=False, server_default=""),
    sa.Column("modified", sa.String(64), nullable=False, server_default=""),
    # the OSV record as imported (JSON bytes)
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("imported_at", sa.Float, nullable=False),
)

cve_packages = sa.Table(
    "cve_packages",
    metadata,
    # the packages an advisory names, by ecosystem and normalised name
    sa.Column("cve_id", sa.String(100), sa.ForeignKey("cves.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("ecosystem", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
)
sa.Index("ix_cve_packages_name", cve_packages.c.ecosystem, cve_packages.c.name)

dependents = sa.Table(
    "dependents",
    metadata,
    # the reverse dependency index of a channel's published generation (0005): one row per
    # (dependent file, depends spec), keyed by the depended-on name (lowercase)
    sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("file_id", sa.Integer, nullable=False),
    sa.Column("dependent_name", sa.String(200), nullable=False),
    sa.Column("dependent_version", sa.String(100), nullable=False),
    sa.Column("subdir", sa.String(32), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
)
sa.Index("ix_dependents_name", dependents.c.channel_id, dependents.c.name)
sa.Index("ix_dependents_file", dependents.c.file_id)

dependents_state = sa.Table(
    "dependents_state",
    metadata,
    # the generation the channel's dependents rows describe
    sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("gen", sa.Integer, nullable=False, server_default="0"),
)

downloads = sa.Table(
    "downloads",
    metadata,
    # completed package downloads, flushed from memory in batches (proxy/store/downloads.py)
    sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("subdir", sa.String(32), primary_key=True),
    sa.Column("filename", sa.String(400), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_at", sa.Float, nullable=True),
)
sa.Index("ix_downloads_name", downloads.c.channel_id, downloads.c.name)
