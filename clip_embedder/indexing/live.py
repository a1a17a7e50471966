"""Keeps a running API's FAISS indexes fresh: LISTEN on the store's channel, apply each change.

Every write that adds or removes vectors (a worker's job, the CLI, a delete) sends
`NOTIFY clip_embedder_index` in its own transaction; this follower wakes on it, waits a moment for
more (so a burst of jobs becomes one update), and calls `SearchService.refresh` with the removed item
ids; added vectors are found by watermark. It also refreshes every INDEX_REFRESH_SECONDS, so a missed
notification (the connection dropped) costs seconds, not correctness. Every API process runs its
own follower, so several API processes each stay fresh. Its connection is also the API's watch on the
database: when it breaks, `db_down` says since when and why (health answers 503 at once), the embedded
server is started again if its postmaster died, and the follower reconnects every half second.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import psycopg

from clip_embedder.db.common import NOTIFY_CHANNEL
from clip_embedder.db.server import restart_embedded_server

log = logging.getLogger(__name__)


class IndexFollower:
    """A daemon thread: `start()`, then `stop()`. `on_change(removed_item_ids, reset)` does the work."""

    def __init__(self, url: str, on_change: Callable[[list[int], bool], object], *, interval: float = 5.0,
                 debounce: float = 0.05):
        self.url, self.on_change, self.interval, self.debounce = url, on_change, interval, debounce
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-follower", daemon=True)
        self.updates = 0
        self.last_error: str | None = None
        #: None while the database answers; else (monotonic time it went away, the error)
        self.db_down: tuple[float, str] | None = None

    def start(self) -> "IndexFollower":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _apply(self, removed: list[int], reset: bool) -> None:
        try:
            self.on_change(removed, reset)
            self.updates += 1
            self.last_error = None
        except Exception as e:  # keep following; the next tick retries
            self.last_error = f"{type(e).__name__}: {e}"
            log.warning("index refresh failed: %s", self.last_error)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if self.db_down is not None:
                        log.warning("the database is back after %.1fs", time.monotonic() - self.db_down[0])
                    self.db_down = None
                    self._apply([], False)  # catch up on what happened before we listened
                    while not self._stop.is_set():
                        removed: list[int] = []
                        reset = False
                        got = False
                        for n in conn.notifies(timeout=self.interval, stop_after=1):
                            got = True
                            removed, reset = self._parse(n.payload, removed, reset)
                        if got:  # gather the rest of a burst
                            time.sleep(self.debounce)
                            for n in conn.notifies(timeout=0.001):
                                removed, reset = self._parse(n.payload, removed, reset)
                        self._apply(removed, reset)
            except psycopg.Error as e:
                self.last_error = f"{type(e).__name__}: {e}".strip()
                if self.db_down is None:
                    self.db_down = (time.monotonic(), self.last_error)
                    log.warning("the database connection is lost (%s); reconnecting", e)
                try:  # the embedded server's postmaster died (killed, OOM): start it again
                    restart_embedded_server(self.url)
                except Exception as restart_error:
                    log.warning("could not restart the embedded PostgreSQL: %s", restart_error)
                self._stop.wait(0.5)

    @staticmethod
    def _parse(payload: str, removed: list[int], reset: bool) -> tuple[list[int], bool]:
        try:
            msg = json.loads(payload or "{}")
        except ValueError:
            return removed, True
        return removed + [int(i) for i in msg.get("removed", [])], reset or bool(msg.get("reset"))
