"""The worker's wait for a lost database: probes with a doubling, capped delay, says what to check, stops on a
signal. Against a port nothing listens on (no database needed)."""
from __future__ import annotations

import asyncio
import logging
import time

from clip_embedder.intake import reconnect
from tests.helpers import free_port


def test_waiting_for_a_database_that_never_answers_backs_off_and_stops_on_signal(caplog, monkeypatch):
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    probes: list[float] = []
    real_probe = reconnect.probe

    async def counted(u: str) -> str | None:
        probes.append(time.monotonic())
        return await real_probe(u)

    monkeypatch.setattr(reconnect, "probe", counted)

    async def run() -> bool:
        stopping = asyncio.Event()
        asyncio.get_running_loop().call_later(0.9, stopping.set)
        return await reconnect.wait_for_database(url, stopping, first=0.05, most=0.2)

    with caplog.at_level(logging.WARNING, logger="clip_embedder.worker"):
        t = time.monotonic()
        assert asyncio.run(run()) is False  # the signal ended the wait, well before any pool timeout
    assert time.monotonic() - t < 2
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    # 0.05, 0.1, 0.2, 0.2, … (plus each probe's refused connection): doubling, then capped
    assert 4 <= len(probes) <= 9 and gaps[0] < gaps[2] and max(gaps) < 0.5, gaps
    said = caplog.text
    assert "not answering" in said and "check that PostgreSQL runs and DATABASE_URL" in said


def test_a_probe_says_why_in_one_line():
    reason = asyncio.run(reconnect.probe(f"postgresql://nobody@127.0.0.1:{free_port()}/none"))
    assert reason is not None and "\n" not in reason and reason.startswith("OperationalError")
