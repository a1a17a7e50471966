"""A worker's Prometheus endpoint: the first free port of a range, announced to Prometheus through file_sd.

Several workers on one host network (`docker-compose up --scale worker=N` with host networking, or N processes on
one machine) cannot share one port: each takes the first free one of WORKER_METRICS_PORT ..
WORKER_METRICS_PORT + WORKER_METRICS_PORTS - 1, and writes a target file `worker-<port>.json` into
WORKER_METRICS_SD_DIR (Prometheus' `file_sd_configs` format: `[{"targets": ["address:port"], "labels": {...}}]`),
removed when the worker exits. A worker killed outright leaves its file behind; the next worker to take that
port rewrites it, and Prometheus reports the target down meanwhile.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)


def serve_metrics(port: int, span: int = 1, *, sd_dir: Path | None = None, address: str = "127.0.0.1") -> int:
    """Start prometheus_client's HTTP server on the first free port of `port` .. `port + span - 1`.

    Args:
        port: the first port to try (1..65535). span: how many ports to try.
        sd_dir: where to write the file_sd target file (created); None = none.
        address: the address Prometheus reaches this worker at (written into the target).

    Returns:
        The port taken.

    Raises:
        OSError: every port of the range is taken.
    """
    from prometheus_client import start_http_server  # noqa: PLC0415

    last: OSError | None = None
    for p in range(port, port + max(1, span)):
        try:
            start_http_server(p)
        except OSError as e:  # taken by another worker on this host network
            last = e
            continue
        log.info("metrics on :%d/metrics", p)
        if sd_dir is not None:  # "" = this host's address as its name resolves (a container on a bridge network)
            _announce(Path(sd_dir), address or socket.gethostbyname(socket.gethostname()), p)
        return p
    raise OSError(f"no free metrics port in {port}..{port + span - 1} ({last}); raise WORKER_METRICS_PORTS")


def _announce(sd_dir: Path, address: str, port: int) -> None:
    """Write `worker-<port>.json` atomically; remove it at exit."""
    sd_dir.mkdir(parents=True, exist_ok=True)
    target = sd_dir / f"worker-{port}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [f"{address}:{port}"],
                                "labels": {"job": "worker", "worker": f"{socket.gethostname()}:{os.getpid()}"}}]))
    os.replace(tmp, target)

    def remove() -> None:
        target.unlink(missing_ok=True)

    atexit.register(remove)
