"""dependents of every type: the reverse index is rebuilt, now with python and R files

The index held conda files only. Its watermark is put back to 0 and its rows dropped, so the next
publish (or the first dependents question) of each channel rebuilds it from the files, the same
incremental step from generation 0. No schema change.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM dependents")
    op.execute("DELETE FROM dependents_state")


def downgrade() -> None:
    # the older code answers every row as a conda dependent: it keeps the conda ones only
    op.execute("DELETE FROM dependents WHERE subdir = 'pypi' OR subdir LIKE 'cran-%'")
