"""conda file rows keep their CEP-16 shard entry (the record as msgpack, digests as bytes) and their
record's timestamp, made once at ingest: a full render then neither parses nor re-encodes the records

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("shard_entry", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("record_ts", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("record_ts")
        batch.drop_column("shard_entry")
