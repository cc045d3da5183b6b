"""Open the metadata database and bring its schema up to date with alembic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Executable, Row, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI connection
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the write lock up front, so two writers never deadlock on a lock upgrade."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("writer") else "BEGIN")


def _upgrade(conn: Connection) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


async def open_database(url: str) -> AsyncEngine:
    """Create the engine and run pending migrations, so an upgrade never loses data."""
    is_sqlite = url.startswith("sqlite")
    kwargs: dict = {}
    if not is_sqlite:
        kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
    engine = create_async_engine(url, **kwargs)
    if is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
    return engine


class Database:
    """The engine plus the one way to write: ``async with db.write() as conn``."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._writer = engine.execution_options(writer=True)
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str) -> Database:
        return cls(await open_database(url))

    def read(self) -> AsyncConnection:
        return self.engine.connect()

    async def first(self, query: Executable, conn: AsyncConnection | None = None) -> Row | None:
        """The first row of ``query``: inside the caller's transaction when given one, else on a read."""
        if conn is not None:
            return (await conn.execute(query)).first()
        async with self.read() as fresh:
            return (await fresh.execute(query)).first()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._lock, self._writer.begin() as conn:
            yield conn

    async def close(self) -> None:
        await self.engine.dispose()
