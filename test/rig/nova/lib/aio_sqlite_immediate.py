"""Loaded at the start of every Python process of the rig's OpenStack (a .pth file in its
venv): every SQLite transaction begins with BEGIN IMMEDIATE.

oslo.db turns pysqlite's own transaction handling off and emits a plain (deferred) BEGIN.
A transaction that reads and then writes takes its write lock only at the first write; in
WAL mode, if another process committed in between, SQLite answers "database is locked" at
once, without waiting out the busy timeout (its snapshot is stale, so waiting cannot help).
Under load that failed builds, evacuations and placement's inventory updates. BEGIN
IMMEDIATE takes the write lock first, waiting up to the connection's timeout (30 s) for it.
Production Nova runs on MySQL or PostgreSQL, where none of this arises.
"""
import sqlite3
import sqlite3.dbapi2


class _Cursor(sqlite3.Cursor):
    def execute(self, sql, *args):
        if isinstance(sql, str) and sql.strip().upper() == "BEGIN":
            sql = "BEGIN IMMEDIATE"
        return super().execute(sql, *args)


class _Connection(sqlite3.Connection):
    def cursor(self, factory=_Cursor):
        return super().cursor(factory)

    def execute(self, sql, *args):
        return self.cursor().execute(sql, *args)


_connect = sqlite3.dbapi2.connect


def connect(*args, **kwargs):
    kwargs.setdefault("factory", _Connection)
    return _connect(*args, **kwargs)


sqlite3.connect = connect
sqlite3.dbapi2.connect = connect
