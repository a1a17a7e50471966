"""What a cheap "does this photo hold text?" gate in front of RapidOCR would cost and miss (groundwork for issue
"Searchable first, read after").

For every COCO128 photo: RapidOCR as the project runs it (PP-OCRv4 detection at a shorter side of at least 736 px,
angle classifier, recognition) — its wall time, and its lines at or above OCR_MIN_CONFIDENCE (0.6); then RapidOCR's
own text detector alone as a gate, at the photo's size capped to each `--sides` value (no upscaling), with the
default DB post-processing thresholds and with lower ones. Prints, per gate: ms per photo, photos passed, and the
photos with text it would have skipped ("sure" text: a line of 3+ characters at confidence >= 0.85).

`--engine` then runs the project's own `RapidOcrEngine` with OCR_GATE off and on, side by side.

    .venv/bin/python benchmarks/bench_ocr_gate.py [--limit 128] [--sides 320,480,640] [--engine]
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
from PIL import Image

from common import SHARED, machine

#: (thresh, box_thresh) of the DB post-processing: RapidOCR's defaults, then lower (more boxes, fewer misses)
THRESHOLDS = [(0.3, 0.5), (0.2, 0.3)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=128, help="COCO128 photos measured (default 128)")
    p.add_argument("--sides", default="320,480,640", help="longest side of the gate's input, pixels")
    p.add_argument("--engine", action="store_true", help="then the project's engine with OCR_GATE off and on")
    args = p.parse_args()
    import rapidocr_onnxruntime.main as rapid
    from rapidocr_onnxruntime.ch_ppocr_det import TextDetector

    engine = rapid.RapidOCR()
    cfg = rapid.update_model_path(rapid.read_yaml(rapid.DEFAULT_CFG_PATH))
    gates = {}
    for side in (int(s) for s in args.sides.split(",")):
        for thresh, box_thresh in THRESHOLDS:
            c = copy.deepcopy(cfg["Det"])
            c.update(limit_type="min", limit_side_len=32, thresh=thresh, box_thresh=box_thresh)  # no upscaling
            gates[(side, thresh, box_thresh)] = TextDetector(c)
    photos = sorted((SHARED / "datasets" / "coco128" / "images").glob("*.jpg"))[:args.limit]
    full_ms: dict[str, float] = {}
    lines: dict[str, list[tuple[str, float]]] = {}
    gate_ms: dict[tuple, list[float]] = {k: [] for k in gates}
    passed: dict[tuple, set[str]] = {k: set() for k in gates}
    for path in photos:
        im = Image.open(path).convert("RGB")
        t = time.perf_counter()
        result, _ = engine(np.asarray(im))
        full_ms[path.name] = (time.perf_counter() - t) * 1000
        lines[path.name] = [(str(text), float(c)) for _, text, c in result or [] if float(c) >= 0.6 and text.strip()]
        for key, det in gates.items():
            s = min(1.0, key[0] / max(im.size))
            small = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BILINEAR) if s < 1 else im
            t = time.perf_counter()
            boxes, _ = det(np.asarray(small))
            gate_ms[key].append((time.perf_counter() - t) * 1000)
            if boxes is not None and len(boxes):
                passed[key].add(path.name)
    text = {n for n, ls in lines.items() if ls}
    sure = {n for n, ls in lines.items() if any(c >= 0.85 and len(t.strip()) >= 3 for t, c in ls)}
    print(f"machine: {machine()}")
    print(f"{len(photos)} COCO128 photos: {len(text)} with text read at >= 0.6, {len(sure)} with a sure line")
    print(f"RapidOCR as run today: {np.mean([full_ms[n] for n in text]):.0f} ms per photo with text, "
          f"{np.mean([full_ms[n] for n in full_ms if n not in text]):.0f} ms without")
    for key, ms in gate_ms.items():
        side, thresh, box_thresh = key
        cost = np.mean(ms) + len(passed[key]) / len(photos) * np.mean(list(full_ms.values()))
        print(f"gate side {side:4d} thresh {thresh} box {box_thresh}: {np.mean(ms):4.0f} ms/photo, passes "
              f"{len(passed[key]):3d}, skips {len(text - passed[key]):2d} of {len(text)} with text and "
              f"{len(sure - passed[key]):2d} of {len(sure)} with sure text {sorted(sure - passed[key])[:6]}; gate + "
              f"OCR of what passes ≈ {cost:.0f} ms/photo")
    if args.engine:
        engine_side_by_side(photos)


def engine_side_by_side(photos) -> None:
    """The project's engine as indexing runs it (`RapidOcrEngine.read`, OCR_MIN_CONFIDENCE 0.6), OCR_GATE off and
    on, on the same photos in one run: ms per photo, photos with text found, photos the gate lost."""
    from clip_embedder.models.ocr import RapidOcrEngine

    found: dict[bool, set[str]] = {}
    for gate in (False, True):
        eng = RapidOcrEngine(0.6, gate=gate).load()
        ms, found[gate] = [], set()
        for path in photos:
            im = Image.open(path).convert("RGB")
            t = time.perf_counter()
            lines = eng.read(im)
            ms.append((time.perf_counter() - t) * 1000)
            if lines:
                found[gate].add(path.name)
        print(f"RapidOcrEngine OCR_GATE={'on ' if gate else 'off'}: {np.mean(ms):4.0f} ms/photo (p50 "
              f"{np.median(ms):.0f}), text found in {len(found[gate])} photos"
              + (f", gate passed {eng.gate_passed} / skipped {eng.gate_skipped}" if gate else ""))
    lost = sorted(found[False] - found[True])
    print(f"photos whose text the gate lost: {len(lost)} of {len(found[False])} {lost[:8]}")


if __name__ == "__main__":
    main()
