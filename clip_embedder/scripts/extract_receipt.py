"""Extract receipts: one JSON object per line for each receipt photo (its `path` and the fields: merchant, address,
date, time, items, subtotal, tax, total, currency, payment method, the lines with their boxes, confidence per
field, needs_review with its reasons). The extractor is RECEIPT_EXTRACTOR (auto: the registered champion, else the
rules); models load once.

Examples:
    python -m clip_embedder.scripts.extract_receipt receipt1.jpg receipt2.jpg
    python -m clip_embedder.scripts.extract_receipt --lines box/000.csv box/009.csv     # from text lines, no OCR
    python -m clip_embedder.scripts.extract_receipt --extractor rules scans/*.jpg > receipts.jsonl
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clip_embedder.scripts.extract_receipt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", type=Path, help="receipt photos (JPEG, PNG, …)")
    p.add_argument("--lines", nargs="+", type=Path, default=[],
                   help="text-line files in the SROIE box format (x1,y1,…,x4,y4,text) to extract from instead of "
                        "photos")
    p.add_argument("--extractor", choices=("auto", "learned", "rules"), default=None,
                   help="default: RECEIPT_EXTRACTOR")
    args = p.parse_args(argv)
    if not args.paths and not args.lines:
        p.error("give receipt photos, or --lines FILE.csv …")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("clip_embedder").setLevel(logging.INFO)
    from clip_embedder.config import Settings  # noqa: PLC0415
    from clip_embedder.images import ImageError, read_image_file  # noqa: PLC0415
    from clip_embedder.models.ocr import RapidOcrEngine  # noqa: PLC0415
    from clip_embedder.receipts.registry import create_extractor  # noqa: PLC0415
    from clip_embedder.receipts.sroie import read_box_csv  # noqa: PLC0415

    settings = Settings(**({"receipt_extractor": args.extractor} if args.extractor else {}))
    try:
        extractor = create_extractor(settings)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ocr = RapidOcrEngine(settings.ocr_min_confidence) if args.paths else None
    failed = 0
    for path in [*args.paths, *args.lines]:
        t = time.perf_counter()
        try:
            if path in args.lines:
                lines = read_box_csv(path)
            else:
                assert ocr is not None
                image, _ = read_image_file(path, max_bytes=settings.index_max_bytes,
                                           max_pixels=settings.index_max_pixels)
                lines = ocr.read(image)
        except (OSError, ImageError) as e:
            print(json.dumps({"path": str(path), "error": str(e)}), flush=True)
            failed += 1
            continue
        receipt = extractor.extract(lines)
        print(json.dumps({"path": str(path), **receipt.model_dump(mode="json"),
                          "elapsed_ms": round((time.perf_counter() - t) * 1000, 1)}, ensure_ascii=False), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
