"""Yanking uploaded python files (PEP 592): the file stays downloadable, but pip and uv skip it
unless a requirement pins its version exactly.

A yank changes the file's record, so it lands like every content change: in a new generation
(the old row removed, a copy with the new record added, the same blob), then published — a
frozen channel shows it on unfreeze. A mirrored file follows its upstream's yanked state instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import sqlalchemy as sa

from conda_platform_plugin.errors import BadRequest, Conflict, NotFound
from conda_platform_plugin.names import PYPI_SUBDIR

from .channels import ChannelStore
from .publish import CURRENT
from .tables import files

if TYPE_CHECKING:
    from ..platform import Platform

MAX_REASON = 500


async def set_yanked(platform: Platform, path: str, subdir: str, filename: str, reason: str | None, *,
                     yanked: bool) -> dict:
    """Yank (with an optional reason) or un-yank one python file; returns its state and generation."""
    if subdir != PYPI_SUBDIR:
        raise BadRequest(f"only python files (subdir {PYPI_SUBDIR!r}) can be yanked (PEP 592)")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        raise BadRequest(f"'reason' must be a text of at most {MAX_REASON} characters")
    state: bool | str = (reason or True) if yanked else False
    ch = await platform.channels.get(path)
    async with platform.db.write() as conn:
        row = (await conn.execute(sa.select(files).where(
            files.c.channel_id == ch.id, files.c.subdir == subdir, files.c.filename == filename, CURRENT))).first()
        if row is None:
            raise NotFound(f"{subdir}/{filename} not found in channel {ch.name!r}")
        if row.mirror_id is not None:
            raise Conflict(f"{filename} comes from a mirror: its yanked state follows the upstream index")
        record = orjson.loads(row.record)
        gen = None
        if record.get("yanked", False) != state:
            record["yanked"] = state
            gen = await ChannelStore.new_generation(conn, ch.id, f"{'yank' if yanked else 'un-yank'} {filename}")
            await conn.execute(files.update().where(files.c.id == row.id).values(removed_gen=gen))
            values = {k: v for k, v in row._mapping.items() if k != "id"}
            values.update(record=orjson.dumps(record, option=orjson.OPT_SORT_KEYS), added_gen=gen, removed_gen=None)
            await conn.execute(files.insert().values(**values))
    if gen is not None:
        await platform.publisher.publish(ch.id)
    return {"channel": ch.name, "file": f"{subdir}/{filename}", "yanked": state, "generation": gen}
