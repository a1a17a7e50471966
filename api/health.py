"""Health's moving parts: the database probe (libpq's ping, off the GIL, served from its latest answer) and the
cache that keeps /api/health's row counts fresh without making a caller wait (`api.routes.service` answers)."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class StaleWhileRevalidate:
    """A value recomputed at most every `max_age` seconds, never while a caller waits (after the first):
    a caller finding it older starts one background refresh and gets the previous value at once. So
    `/api/health` answers in about a millisecond while its row counts (a `count(*)` over a million items
    takes tens of milliseconds) are at most `max_age` plus one refresh old. `max_age` 0 computes every time.
    """

    def __init__(self, max_age: float):
        self.max_age = max_age
        self._value: Any = None
        self._at = 0.0
        self._lock = threading.Lock()
        self._refreshing = False

    @property
    def ready(self) -> bool:
        """True when `get` answers from memory (a value is cached and caching is on)."""
        return self.max_age > 0 and self._value is not None

    def get(self, compute: Callable[[], Any]) -> Any:
        """The cached value (computed now on the first call, or when `max_age` is 0).

        Raises:
            whatever `compute` raises, on the calls that run it in the caller's thread.
        """
        if self.max_age <= 0:
            return compute()
        with self._lock:
            if self._value is None:
                self._value, self._at = compute(), time.monotonic()
                return self._value
            if time.monotonic() - self._at > self.max_age and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, args=(compute,), daemon=True, name="health-refresh").start()
            return self._value

    def _refresh(self, compute: Callable[[], Any]) -> None:
        try:
            value = compute()
            with self._lock:
                self._value, self._at = value, time.monotonic()
        except Exception:  # the database went away: the next caller tries again (the probe reports it)
            pass
        finally:
            self._refreshing = False


def libpq_ping() -> Callable[[bytes], int]:
    """libpq's `PQping(conninfo) -> PGPing` (0 = accepting connections), called through ctypes, which releases the
    GIL for the call: a connection attempt takes 3-40 ms on a busy 2-core machine (PostgreSQL forks a backend), and
    psycopg's compiled `pq.PGconn.ping` holds the GIL all along, stalling every search thread and the event loop.

    The libpq is the one psycopg's binary wheel bundles (already loaded: dlopen returns the same copy), else the
    system's; without either, psycopg's own ping (GIL held) is returned."""
    import ctypes  # noqa: PLC0415
    import ctypes.util  # noqa: PLC0415

    candidates: list[str] = []
    try:
        import psycopg_binary  # noqa: PLC0415

        bundled = Path(psycopg_binary.__file__).resolve().parent.parent / "psycopg_binary.libs"
        candidates += [str(p) for p in sorted(bundled.glob("libpq-*.so*"))]
    except ImportError:
        pass
    if (system := ctypes.util.find_library("pq")) is not None:
        candidates.append(system)
    for name in candidates:
        try:
            fn = ctypes.CDLL(name).PQping
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_char_p], ctypes.c_int
        return fn
    from psycopg import pq  # noqa: PLC0415

    return pq.PGconn.ping


#: the age, in seconds, of the database ping that /api/health reports at most (a new ping starts in the background
#: when the last is older; the caller never waits for one after the first)
DB_PROBE_MAX_AGE = 0.5


class DatabaseProbe:
    """Health's database check: libpq's `PQping`, what `pg_isready` runs (a new connection attempt each time: not a
    pooled connection, which can all be busy with searches, nor a kept one, whose backend can outlive a killed
    postmaster for a moment and still answer).

    A ping costs a PostgreSQL backend fork (3-40 ms on a busy 2-core machine) and, from a thread, a wait for the GIL
    when it ends (each such wait behind searching threads costs up to the interpreter's 5 ms switch interval, and
    more under a convoy). So `check` answers from the latest ping when it is at most `max_age` seconds old; an older
    one starts one ping in a background thread (GIL released during the call: `libpq_ping`) and the caller gets
    the latest result at once, as the row counts are served (`StaleWhileRevalidate`). The first check waits for its
    ping. An outage is reported by the first check after the ping that saw it: at most `max_age` plus one ping
    late; a ping with no answer within `timeout` is reported as one.
    """

    def __init__(self, url: str, max_age: float = DB_PROBE_MAX_AGE):
        from psycopg.conninfo import make_conninfo  # noqa: PLC0415

        # libpq's smallest connect_timeout is 2 s: a host that drops packets ends the background ping by then
        self._conninfo = make_conninfo(url, connect_timeout=2).encode()
        self._ping_fn = libpq_ping()
        self.max_age = max_age
        self._lock = threading.Lock()
        self._checked_at: float | None = None  # monotonic time the latest ping ended
        self._error: str | None = None  # what the latest ping saw, None when PostgreSQL accepted connections
        self._started_at: float | None = None  # monotonic start of the ping in flight
        self._done = threading.Event()

    def _ping(self) -> None:
        from psycopg import pq  # noqa: PLC0415

        try:
            got = self._ping_fn(self._conninfo)
            error = None if got == pq.Ping.OK else f"PostgreSQL answers {pq.Ping(got).name} to a ping"
        except Exception as e:  # noqa: BLE001 (reported by the next check)
            error = f"the ping failed: {e}"
        with self._lock:
            self._error, self._checked_at, self._started_at = error, time.monotonic(), None
            self._done.set()

    async def check(self, timeout: float = 1.0) -> None:
        """Raises OSError when the latest ping saw no PostgreSQL accepting connections, TimeoutError when a ping has
        had no answer for `timeout` seconds (the first check waits up to `timeout` for its own)."""
        now = time.monotonic()
        with self._lock:
            stale = self._checked_at is None or now - self._checked_at > self.max_age
            if stale and self._started_at is None:
                self._started_at = now
                self._done.clear()
                threading.Thread(target=self._ping, name="health-db-ping", daemon=True).start()
            first, started = self._checked_at is None, self._started_at
        if first:
            await asyncio.wait_for(asyncio.to_thread(self._done.wait), timeout)
        elif started is not None and now - started > timeout:
            raise TimeoutError(f"no answer to a ping for {now - started:.1f}s")
        with self._lock:
            error = self._error
        if error is not None:
            raise OSError(error)
