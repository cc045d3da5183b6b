"""Policies in the running platform: which policy filters a channel or a mirror, applying and
detaching them (each change republishes the channel), and previews that change nothing.

The Platform facade delegates here (``platform.policy``); handlers stay thin.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson
import sqlalchemy as sa

from conda_platform_plugin.dependencies import DependencyIndex
from conda_platform_plugin.errors import BadRequest, Conflict, UpstreamError
from conda_platform_plugin.names import check_subdir
from conda_platform_plugin.policy import CompiledPolicy, Policy, summarize

from .store.cves import CveStore
from .store.policies import PolicyStore, StoredPolicy
from .store.publish import CURRENT
from .store.tables import files

if TYPE_CHECKING:
    from .platform import Platform

#: the largest upstream repodata.json a preview reads
PREVIEW_LIMIT = 512 << 20
DEFAULT_SUBDIRS = ("noarch", "linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64")


class PolicyService:
    def __init__(self, platform: Platform):
        self.platform = platform
        self.store = PolicyStore(platform.db)
        self.cves = CveStore(platform.db)
        self._compiled: dict[tuple, CompiledPolicy] = {}

    # -- compiled policies (contract A) ------------------------------------------------------------
    async def compile(self, stored: StoredPolicy | Policy, now: float | None = None) -> CompiledPolicy:
        policy = stored.policy if isinstance(stored, StoredPolicy) else stored
        index = await self.cves.index() if "cve" in policy.kinds else None
        now = time.time() if now is None else now
        key = (policy.name, policy.version, policy.digest(), index.stamp if index else None, int(now // 3600))
        hit = self._compiled.get(key)
        if hit is None:
            hit = await asyncio.to_thread(policy.compile, cves=index, now=now)
            if len(self._compiled) > 256:
                self._compiled.clear()
            self._compiled[key] = hit
        return hit

    async def channel_policy(self, channel_id: int) -> CompiledPolicy | None:
        pid = await self.store.channel_policy_id(channel_id)
        if pid is None:
            return None
        stored = await self.store.by_id(pid)
        return await self.compile(stored) if stored is not None else None

    async def mirror_policy(self, mirror) -> CompiledPolicy | None:  # noqa: ANN001 - a Mirror or its id
        """The mirror's own policy if set, else its channel's (the override rule)."""
        mid = mirror if isinstance(mirror, int) else mirror.id
        own, channel_pid, _ = await self.store.mirror_policy_ids(mid)
        pid = own if own is not None else channel_pid
        if pid is None:
            return None
        stored = await self.store.by_id(pid)
        return await self.compile(stored) if stored is not None else None

    # -- changes -------------------------------------------------------------------------------
    async def create(self, doc: Mapping, actor: str = "") -> StoredPolicy:
        return await self.store.create(Policy.from_json(doc), actor)

    async def update(self, name: str, doc: Mapping, actor: str = "") -> StoredPolicy:
        current = await self.store.get(name)
        if "name" in doc and doc["name"] != name:
            raise BadRequest("a policy cannot be renamed: create a new one")
        merged = {"name": name, "description": doc.get("description", current.policy.description),
                  "rules": doc.get("rules", list(current.policy.rules))}
        stored, changed = await self.store.update(name, Policy.from_json(merged), actor)
        if changed:  # every channel filtered by it publishes again with the new version
            for cid in await self.store.channels_using(stored.id):
                await self._republish(cid, f"policy {name} v{stored.policy.version}")
        return stored

    async def apply(self, name: str, channel: str, mirror: str | None = None) -> dict:
        stored = await self.store.get(name)
        ch = await self.platform.channels.get(channel)
        if mirror is None:
            if await self.store.channel_policy_id(ch.id) == stored.id:
                return {"policy": name, "channel": ch.name, "generation": ch.head_gen, "changed": False}
            gen = await self._set_channel(ch.id, stored.id, f"apply policy {name} v{stored.policy.version}")
            return {"policy": name, "channel": ch.name, "generation": gen, "changed": True}
        row = await self.store.mirror_row(ch.id, mirror)
        await self.mirror_policy_id(name, ch.id, mirror)
        await self.store.set_mirror_policy(row.id, stored.id)
        return {"policy": name, "channel": ch.name, "mirror": mirror, "changed": row.policy_id != stored.id,
                "note": "applies from the mirror's next run"}

    async def mirror_policy_id(self, name: object, channel_id: int, mirror: str = "") -> int:
        """The id of a policy a mirror of the channel may be given: it exists (404) and is not the
        one its channel already has (409: the mirror follows the channel's policy anyway)."""
        if not isinstance(name, str) or not name:
            raise BadRequest("'policy' must be the name of a policy")
        stored = await self.store.get(name)
        if await self.store.channel_policy_id(channel_id) == stored.id:
            ch = await self.platform.channels.by_id(channel_id)
            raise Conflict(
                f"policy {name!r} is already applied to channel {ch.name!r}, whose mirrors follow it: a mirror "
                "can only be given a different policy (detach it to follow the channel's)",
                detail={"policy": name, "channel": ch.name, "mirror": mirror},
            )
        return stored.id

    async def mirror_view(self, mirror_id: int) -> dict:
        """The mirror's own policy, and the one its runs actually apply (own, else the channel's)."""
        own, channel_pid, _ = await self.store.mirror_policy_ids(mirror_id)
        names = {}
        for pid in {own, channel_pid} - {None}:
            stored = await self.store.by_id(pid)
            names[pid] = stored.policy.name if stored else None
        effective = own if own is not None else channel_pid
        return {"policy": names.get(own), "effective_policy": names.get(effective),
                "policy_from": None if effective is None else ("mirror" if own is not None else "channel")}

    async def detach(self, channel: str, mirror: str | None = None) -> dict:
        ch = await self.platform.channels.get(channel)
        if mirror is None:
            pid = await self.store.channel_policy_id(ch.id)
            if pid is None:
                return {"channel": ch.name, "changed": False, "generation": ch.head_gen}
            gen = await self._set_channel(ch.id, None, "detach policy")
            return {"channel": ch.name, "changed": True, "generation": gen}
        row = await self.store.mirror_row(ch.id, mirror)
        await self.store.set_mirror_policy(row.id, None)
        return {"channel": ch.name, "mirror": mirror, "changed": row.policy_id is not None,
                "note": "the mirror follows its channel's policy from its next run"}

    async def _set_channel(self, channel_id: int, policy_id: int | None, summary: str) -> int:
        gen = await self.store.set_channel_policy(channel_id, policy_id, summary)
        await self.platform.publisher.publish(channel_id)
        return gen

    async def _republish(self, channel_id: int, summary: str) -> None:
        from .store.channels import ChannelStore

        async with self.platform.db.write() as conn:
            await ChannelStore.new_generation(conn, channel_id, summary)
        await self.platform.publisher.publish(channel_id)

    async def import_cves(self, records: list) -> dict:
        """Import advisories; channels whose policy has a CVE rule publish again when any changed."""
        result = await self.cves.import_records(records)
        if result["created"] or result["updated"]:
            for stored in await self.store.list():
                if "cve" in stored.policy.kinds:
                    for cid in await self.store.channels_using(stored.id):
                        await self._republish(cid, f"CVE data changed ({result['created']} new, "
                                                   f"{result['updated']} updated advisories)")
        return result

    async def artifact_cves(self, name: str, rows: list) -> dict:
        from conda_platform_plugin.cves import artifact_report

        index = await self.cves.index()
        return artifact_report(index, name, ((r.subdir, r.filename, r.version, orjson.loads(r.record))
                                             for r in rows))

    async def policy_of_channel(self, channel: str) -> StoredPolicy | None:
        ch = await self.platform.channels.get(channel)
        pid = await self.store.channel_policy_id(ch.id)
        return await self.store.by_id(pid) if pid is not None else None

    # -- preview -------------------------------------------------------------------------------
    async def preview(self, policy: Policy, *, channel: str | None = None, url: str | None = None,
                      subdirs: list[str] | None = None, limit: int = 1000) -> dict:
        """What the policy would do to a channel's current records or an upstream channel's: nothing
        is changed. Lists the exclusions with their reasons and what becomes uninstallable."""
        if (channel is None) == (url is None):
            raise BadRequest("preview needs exactly one of 'channel' or 'url'")
        subdirs = [check_subdir(s) for s in subdirs] if subdirs else None
        if channel is not None:
            ch = await self.platform.channels.get(channel)
            records = await self._channel_records(ch.id, subdirs)
            source = {"channel": ch.name}
        else:
            records = await self._upstream_records(url, subdirs)
            from .mirror.http import redact

            source = {"url": redact(url)}
        compiled = await self.compile(policy)
        return await asyncio.to_thread(_preview, compiled, records, source, limit)

    async def _channel_records(self, channel_id: int, subdirs: list[str] | None) -> dict[str, dict[str, dict]]:
        cond = (files.c.channel_id == channel_id) & CURRENT & (files.c.type == "conda")
        if subdirs:
            cond &= files.c.subdir.in_(subdirs)
        out: dict[str, dict[str, dict]] = defaultdict(dict)
        async with self.platform.db.read() as conn:
            result = await conn.stream(sa.select(files.c.subdir, files.c.filename, files.c.record).where(cond)
                                       .execution_options(yield_per=5000))
            async for part in result.partitions(5000):
                for subdir, filename, record in part:
                    out[subdir][filename] = orjson.loads(record)
        return out

    async def _upstream_records(self, url: str, subdirs: list[str] | None) -> dict[str, dict[str, dict]]:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise BadRequest("'url' must be an http(s) URL of a conda channel")
        base = url.rstrip("/")
        wanted = subdirs or list(DEFAULT_SUBDIRS)
        out: dict[str, dict[str, dict]] = {}
        from .mirror.http import UpstreamNotFound

        for subdir in wanted:
            try:
                _, _, body = await self.platform.upstream.read(f"{base}/{subdir}/repodata.json", limit=PREVIEW_LIMIT)
            except UpstreamNotFound:
                if subdirs:  # asked for by name: say so
                    raise
                continue
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise UpstreamError(f"{subdir}/repodata.json of the upstream is not JSON") from None
            out[subdir] = {**(doc.get("packages") or {}), **(doc.get("packages.conda") or {})}
        if not out:
            raise UpstreamError("the upstream has no repodata.json in any of the subdirs "
                                f"{', '.join(wanted)}", detail={"subdirs": wanted})
        return out


def _preview(compiled: CompiledPolicy, records: dict[str, dict[str, dict]], source: dict, limit: int) -> dict:
    excluded: dict[tuple[str, str], object] = {}
    for subdir, recs in records.items():
        for fn, verdict in compiled.exclusions(subdir, recs).items():
            excluded[(subdir, fn)] = verdict
    index = DependencyIndex((s, fn, rec) for s, recs in records.items() for fn, rec in recs.items())
    broken = index.uninstallable(set(excluded))
    total = sum(len(r) for r in records.values())

    def entry(key: tuple[str, str]) -> dict:
        rec = records[key[0]][key[1]]
        return {"subdir": key[0], "filename": key[1], "name": rec.get("name"), "version": rec.get("version")}

    return {
        "policy": compiled.name,
        "version": compiled.version,
        "fingerprint": compiled.fingerprint,
        "source": source,
        "subdirs": sorted(records),
        "records": total,
        "passed": total - len(excluded),
        "excluded": len(excluded),
        "by_rule": summarize(excluded.values()),
        "uninstallable_count": len(broken),
        "excluded_records": [{**entry(k), **v.to_json()} for k, v in sorted(excluded.items())[:limit]],
        "uninstallable": [{**entry(k), "failing": specs} for k, specs in sorted(broken.items())[:limit]],
        "truncated": len(excluded) > limit or len(broken) > limit,
    }
