"""A worker's metrics endpoint on a shared host network: the first free port of its range, announced for file_sd."""
from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from clip_embedder.intake.metrics_server import serve_metrics


def _taken_port_pair() -> tuple[socket.socket, int]:
    """A listening socket on port p (taken), where p + 1 is free."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("", 0))
        p = s.getsockname()[1]
        probe = socket.socket()
        try:
            probe.bind(("", p + 1))
        except OSError:
            s.close()
            continue
        finally:
            probe.close()
        s.listen()
        return s, p
    raise RuntimeError("no free port pair")


def test_a_taken_port_moves_to_the_next_and_the_target_is_announced(tmp_path):
    held, port = _taken_port_pair()
    try:
        got = serve_metrics(port, 2, sd_dir=tmp_path / "targets", address="127.0.0.1")
        assert got == port + 1
        target = json.loads((tmp_path / "targets" / f"worker-{got}.json").read_text())
        assert target[0]["targets"] == [f"127.0.0.1:{got}"] and target[0]["labels"]["job"] == "worker"
        assert b"python_info" in urllib.request.urlopen(f"http://127.0.0.1:{got}/metrics", timeout=5).read()
        with pytest.raises(OSError, match="WORKER_METRICS_PORTS"):
            serve_metrics(port, 2)  # both taken now
    finally:
        held.close()
