"""Helpers shared by the benchmark scripts (not part of the library)."""
from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))  # tests.helpers: the sign renderer the benchmarks share with the tests


def bench_parser(doc: str | None):
    """The options every benchmark takes: dataset, spaces, optional CLIP weights."""
    import argparse  # noqa: PLC0415

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=None, help="a coco_subset version (default: built from COCO128)")
    p.add_argument("--spaces", default="mobilenet,text", help="embedding spaces to measure")
    p.add_argument("--clip-pretrained", default=None, help="local OpenCLIP checkpoint (adds nothing unless clip)")
    p.add_argument("--clip-config", default=None, help="OpenCLIP model config JSON for --clip-pretrained")
    return p


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{model}, {os.cpu_count()} cores, {gpu}, Python {platform.python_version()}, torch {torch.__version__}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_subset(path: Path | None, work: Path) -> Path:
    """The given subset version, or the default 7-class subset of COCO128 built under `work`."""
    if path is not None:
        return path
    import extract_coco_subset as ecs

    coco = SHARED / "datasets" / "coco128"
    return ecs.build(str(coco / "annotations" / "instances_coco128_train2017.json"), str(coco / "images"),
                     work / "coco_subset", ecs.DEFAULT_CLASSES, (0.7, 0.15, 0.15), 0, None, work / "cache",
                     progress=False)


def bench_settings(work: Path, spaces: str, clip_pretrained: str | None, clip_config: str | None):
    from clip_embedder.config import Settings

    kw = dict(_env_file=None, pgdata_dir=work / "pgdata", faiss_dir=work / "faiss", spaces=spaces,
              detector_weights=os.environ.get("DETECTOR_WEIGHTS", str(SHARED / "models/yolov5/yolov5n.pt")),
              mobilenet_weights=os.environ.get(
                  "MOBILENET_WEIGHTS",
                  str(SHARED / "models/mobilenet/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")),
              tagger_weights=os.environ.get("TAGGER_WEIGHTS",
                                            str(SHARED / "models/mobilenet/mobilenet_quant_v1_224_head_layers.tflite")),
              tagger_labels=os.environ.get("TAGGER_LABELS", str(SHARED / "models/mobilenet/imagenet_labels.txt")),
              ocr=os.environ.get("OCR", "off"))  # OCR is measured on its own (bench_quality.py, words part)
    if clip_pretrained:
        kw["clip_pretrained"] = clip_pretrained
    if clip_config:
        kw["clip_model_config"] = clip_config
        kw["clip_model"] = Path(clip_config).stem
    return Settings(**kw)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, by numpy's linear interpolation; nan when empty."""
    import numpy as np  # noqa: PLC0415

    return float(np.percentile(values, q)) if values else float("nan")


def wait_for_api(url: str, proc, seconds: float = 240) -> None:
    """Until `url`/api/health answers 200. Raises RuntimeError when `proc` (the API's process) exits first or
    `seconds` pass."""
    import time  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise RuntimeError(f"the API at {url} did not start")


def probe_health(url: str, seconds: float, every: float) -> list[float]:
    """GET `url`/api/health every `every` seconds for `seconds`; the latency of each answer in ms (sync httpx)."""
    import time  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    out: list[float] = []
    stop = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=60) as c:
        while time.monotonic() < stop:
            t = time.perf_counter()
            c.get("/api/health")
            out.append((time.perf_counter() - t) * 1000)
            time.sleep(every)
    return out


async def http_load(url: str, request, clients: int, seconds: float, health_every: float = 0.1,
                    timeout: float = 120.0) -> dict:
    """`clients` concurrent HTTP clients calling `request(client, rnd)` for `seconds`, while a prober in a process
    of its own (as a container health check would be) asks `/api/health` every `health_every` seconds.

    `request` is an async function of an `httpx.AsyncClient` and the client's own `random.Random` that makes one
    request and returns (route name, response). Returns {"lat": route → [ms], "codes": Counter of (route, status
    code or exception name), "health": [ms], "wall": seconds}.

    The load generator's own heap (a benchmark that has loaded torch holds ~400,000 objects) is frozen out of the
    garbage collector meanwhile: its full collections paused every client for ~150-250 ms, which the latencies
    then counted. A prober on the clients' event loop also waited behind their callbacks.
    """
    import asyncio  # noqa: PLC0415
    import gc  # noqa: PLC0415
    import json  # noqa: PLC0415
    import random  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import time  # noqa: PLC0415
    from collections import Counter, defaultdict  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    lat: dict[str, list[float]] = defaultdict(list)
    codes: Counter = Counter()
    stop = time.monotonic() + seconds

    async def client(n: int) -> None:
        rnd = random.Random(n)
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as c:
            while time.monotonic() < stop:
                t = time.perf_counter()
                route = "?"
                try:
                    route, r = await request(c, rnd)
                    codes[(route, r.status_code)] += 1
                except httpx.HTTPError as e:
                    codes[(route, type(e).__name__)] += 1
                    continue
                lat[route].append((time.perf_counter() - t) * 1000)

    prober = subprocess.Popen([sys.executable, __file__, "probe-health", url, str(seconds), str(health_every)],
                              stdout=subprocess.PIPE, text=True)
    gc.collect()
    gc.freeze()
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    finally:
        gc.unfreeze()
        out, _ = prober.communicate(timeout=seconds + 120)
    return {"lat": lat, "codes": codes, "health": json.loads(out), "wall": wall}


if __name__ == "__main__" and sys.argv[1:2] == ["probe-health"]:  # http_load's prober process
    import json

    print(json.dumps(probe_health(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))))
