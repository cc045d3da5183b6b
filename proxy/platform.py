"""The platform's domain operations, which every handler and the CLI's ``serve`` go through.

It owns the stores and makes sure that every change that touches a channel's contents is
followed by the one publish path.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

import sqlalchemy as sa

from conda_platform_plugin.errors import NotFound
from conda_platform_plugin.names import check_subdir

from .config import Config
from .ingest import Received, read_upload
from .mirror.fetch import Fetcher
from .mirror.http import Upstream
from .mirror.service import Mirrors
from .policies import PolicyService
from .repo.cran_index import CranRenderer
from .repo.pypi_index import PypiRenderer
from .store.blobs import BlobStore
from .store.channels import Channel, ChannelStore
from .store.db import Database
from .store.dependents import DependentsIndex
from .store.downloads import DownloadCounter
from .store.files import FileStore
from .store.identities import IdentityStore
from .store.publish import Publisher
from .store.serving import ServingIndex
from .store.signing import Signing
from .store.tables import channels

log = logging.getLogger(__name__)


class Platform:
    def __init__(self, config: Config, db: Database):
        self.config = config
        self.db = db
        self.blobs = BlobStore(config.blob_dir)
        self.channels = ChannelStore(db)
        self.files = FileStore(db, self.channels)
        self.publisher = Publisher(db, config.index_dir)
        self.publisher.index_renderers["cran"] = CranRenderer()  # CRAN PACKAGES
        self.publisher.index_renderers["python"] = PypiRenderer()  # the PyPI simple index
        self.serving = ServingIndex(db, ttl=config.serving_ttl)
        self.identities = IdentityStore(db)
        self.upstream = Upstream(connect_timeout=config.upstream_connect_timeout,
                                 read_timeout=config.upstream_read_timeout)
        #: on-demand and active downloads of blobs from their upstream URLs (one per sha256)
        self.fetcher = Fetcher(self.blobs, self.upstream, config.cache_dir / "inflight",
                               max_bytes=config.max_upload_bytes)
        #: the admin token made on first start with an empty database (shown once, never stored)
        self.bootstrap_token: str | None = None
        self.publisher.listeners.append(lambda _cid: self.serving.invalidate())
        #: policies and CVE data; the publisher filters each channel's indexes by its policy
        self.policy = PolicyService(self)
        self.publisher.policy_for = self.policy.channel_policy
        #: content-trust keys (<data dir>/trust, made by 'conda-platform trust init'): every conda
        #: record published is signed with the pkg_mgr key
        self.signing = Signing(config.data_dir)
        self.publisher.signer = self.signing.signer
        #: the dependents reverse index, brought to each published generation by this listener
        self.dependents = DependentsIndex(db)
        self.publisher.listeners.append(self.dependents.published)
        #: completed package downloads, counted in memory and flushed in batches
        self.downloads = DownloadCounter(db)
        #: mirrors: create/edit/delete, views, and the engine that runs them (started by the app)
        self.mirrors = Mirrors(self)

    @classmethod
    async def open(cls, config: Config) -> Platform:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        platform = cls(config, await Database.open(config.database_url))
        await platform.recover()
        #: channels published before 'trust init' / 'trust rotate pkg_mgr' are re-signed in the background
        platform.resigning = asyncio.ensure_future(platform.resign())
        if await platform.identities.count_users() == 0:
            platform.bootstrap_token = await platform.admin_token("created on first start")
        return platform

    async def admin_token(self, description: str) -> str:
        """A new token for the built-in admin (created when missing): the server-host bootstrap."""
        try:
            await self.identities.user("admin")
        except NotFound:
            await self.identities.create_user("admin", admin=True)
        secret, _ = await self.identities.create_token("admin", description=description)
        return secret

    async def close(self) -> None:
        resigning = getattr(self, "resigning", None)
        if resigning is not None and not resigning.done():
            resigning.cancel()
            await asyncio.gather(resigning, return_exceptions=True)
        await self.mirrors.engine.shutdown()
        await self.dependents.drain()
        await self.downloads.close()
        await self.fetcher.close()
        await self.upstream.close()
        self.signing.close()
        await self.db.close()

    async def resign(self) -> list[int]:
        """Publish again (re-signed) the channels whose published indexes were not signed with the
        current pkg_mgr key: what 'trust init' or 'trust rotate pkg_mgr' on the server host leaves
        behind until the next start. Returns their ids."""
        signer = await asyncio.to_thread(self.signing.signer)
        if signer is None:
            return []
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(channels.c.id, channels.c.published_gen)
                                       .where(channels.c.frozen.is_(False), channels.c.published_gen > 0))).all()
        mark = f"signed-by:{signer.public}"
        stale = [cid for cid, gen in rows if mark not in (self.publisher._rendered_policy(cid, gen) or "")]
        for cid in stale:
            async with self.db.write() as conn:
                await ChannelStore.new_generation(conn, cid, f"re-signed with pkg_mgr key {signer.public[:16]}")
            await self.publisher.publish(cid)
        if stale:
            log.info("re-signed %d channel(s) with pkg_mgr key %s", len(stale), signer.public[:16])
        return stale

    async def recover(self) -> None:
        """Finish publishes that a crash cut off: a generation written but not yet published."""
        async with self.db.read() as conn:
            ids = (await conn.execute(sa.select(channels.c.id).where(channels.c.frozen.is_(False)))).scalars().all()
        for cid in ids:
            await self.publisher.publish(cid)

    # -- channels ------------------------------------------------------------------------------
    async def create_channel(self, path: str, *, description: str = "", private: bool = False) -> Channel:
        ch = await self.channels.create(path, description=description, private=private)
        await self.publisher.publish(ch.id)
        return await self.channels.by_id(ch.id)

    async def update_channel(self, path: str, **changes) -> Channel:  # noqa: ANN003
        ch = await self.channels.update(path, **changes)
        self.serving.invalidate()
        return ch

    async def delete_channel(self, path: str) -> None:
        ids = await self.channels.delete(path)
        for cid in ids:
            await asyncio.to_thread(shutil.rmtree, self.config.index_dir / str(cid), True)
        self.serving.invalidate()

    async def freeze(self, path: str) -> Channel:
        return await self.channels.set_frozen(path, True)

    async def unfreeze(self, path: str) -> Channel:
        ch = await self.channels.set_frozen(path, False)
        await self.publisher.publish(ch.id)
        return await self.channels.by_id(ch.id)

    # -- files ---------------------------------------------------------------------------------
    async def ingest(self, path: str, received: list[Received], *, expect_subdir: str | None = None) -> dict:
        """Validate every received file, then commit them all in one generation (or none)."""
        try:
            ch = await self.channels.get(path)
            if expect_subdir is not None:
                check_subdir(expect_subdir)
            new = [await asyncio.to_thread(read_upload, r, expect_subdir) for r in received]
            await self.files.precheck(ch, new)  # a conflict leaves no blob behind
        except BaseException:
            for r in received:
                r.blob.discard()
            raise
        # Blobs first: a committed row must never point at bytes that are not there.
        for r in received:
            await asyncio.to_thread(self.blobs.commit, r.blob)
        gen, created = await self.files.add(ch, new, f"upload {', '.join(r.filename for r in received)[:200]}")
        if gen is not None:
            await self.publisher.publish(ch.id)
        return {"generation": gen, "files": new, "created": created, "channel": ch}

    async def remove_files(self, path: str, keys: list[tuple[str, str]]) -> int:
        ch = await self.channels.get(path)
        gen = await self.files.remove(ch, keys, f"delete {len(keys)} file(s)")
        await self.publisher.publish(ch.id)
        return gen

    async def remove_artifact(self, path: str, type_: str, name: str) -> int:
        ch = await self.channels.get(path)
        gen = await self.files.remove_artifact(ch, type_, name)
        await self.publisher.publish(ch.id)
        return gen

    async def transfer(self, path: str, keys: list[tuple[str, str]], target: str, *, move: bool) -> dict:
        source = await self.channels.get(path)
        dest = await self.channels.get(target)
        result = await self.files.transfer(source, keys, dest, move=move)
        for ch in (source, dest):
            await self.publisher.publish(ch.id)
        return {**result, "source": source.name, "target": dest.name}

