"""cran rows of indexes that carry SHA256: named by it, not by a stand-in

Before 0010 every mirrored R file's row named its bytes by ``"0"*32 + MD5sum`` until they were read,
or ``"0"*32 + md5(url)`` when the index gave a SHA256 but no MD5sum. The fetcher now reads a
``"0"*32`` name as an MD5 key, which the second kind never passes, and a row whose index gives a
SHA256 is named by it. Rows still named by a stand-in whose record has a sha256 get it. No schema
change.

Revision ID: 0010
Revises: 0009
"""

import json
import re

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STAND_IN = "0" * 32


def upgrade() -> None:
    conn = op.get_bind()
    files = sa.table("files", sa.column("id", sa.Integer), sa.column("type", sa.String),
                     sa.column("sha256", sa.String), sa.column("record", sa.LargeBinary))
    rows = conn.execute(sa.select(files.c.id, files.c.sha256, files.c.record).where(
        files.c.type == "cran", files.c.sha256.like(_STAND_IN + "%"))).all()
    updates = []
    for row_id, current, record in rows:
        sha256 = str(json.loads(record).get("sha256") or "").lower()
        if _SHA256.match(sha256) and sha256 != current:
            updates.append({"i": row_id, "s": sha256})
    if updates:
        conn.execute(files.update().where(files.c.id == sa.bindparam("i")).values(sha256=sa.bindparam("s")), updates)


def downgrade() -> None:
    pass  # the older code reads a real sha256 as one: nothing to undo
