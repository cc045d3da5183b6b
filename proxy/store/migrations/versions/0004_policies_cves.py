"""policies (named, versioned, with their history), policy_id on channels and mirrors, CVE advisories

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("rules", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "policy_versions",
        sa.Column("policy_id", sa.Integer, sa.ForeignKey("policies.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("rules", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False, server_default=""),
    )
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("policy_id", sa.Integer, nullable=True))
    with op.batch_alter_table("mirrors") as batch:
        batch.add_column(sa.Column("policy_id", sa.Integer, nullable=True))
    op.create_table(
        "cves",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("aliases", sa.Text, nullable=False, server_default="[]"),
        sa.Column("summary", sa.Text, nullable=False, server_default=""),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("severity", sa.String(16), nullable=True),
        sa.Column("published", sa.String(64), nullable=False, server_default=""),
        sa.Column("modified", sa.String(64), nullable=False, server_default=""),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("imported_at", sa.Float, nullable=False),
    )
    op.create_table(
        "cve_packages",
        sa.Column("cve_id", sa.String(100), sa.ForeignKey("cves.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("ecosystem", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
    )
    op.create_index("ix_cve_packages_name", "cve_packages", ["ecosystem", "name"])


def downgrade() -> None:
    op.drop_index("ix_cve_packages_name", "cve_packages")
    op.drop_table("cve_packages")
    op.drop_table("cves")
    with op.batch_alter_table("mirrors") as batch:
        batch.drop_column("policy_id")
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("policy_id")
    op.drop_table("policy_versions")
    op.drop_table("policies")
