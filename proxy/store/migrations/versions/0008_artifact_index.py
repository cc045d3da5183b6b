"""an index for an artifact's current files (channel, type, name, removed_gen)

Without it SQLite answered "the current files of one name" from ix_files_removed, a scan of the
channel's current files (80-190 ms with 100,000 files, for every artifact page and API call).

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_files_artifact", "files", ["channel_id", "type", "name", "removed_gen"])


def downgrade() -> None:
    op.drop_index("ix_files_artifact", table_name="files")
