"""Extract receipts: one JSON object per line for each receipt photo (its `path` and the fields: merchant, address,
date, time, items, subtotal, tax, total, currency, payment method, the lines with their boxes, confidence per
field, needs_review with its reasons). The extractor is RECEIPT_EXTRACTOR (auto: the registered champion, else the
rules); models load once. With --ingest the photos (files, or every image under a folder) are also written to the
household ledger (the photo stored under STORAGE_ROOT, the receipt filed under a category and checked; the same photo
twice is one receipt), as `POST /api/receipts` does through the workers.

Examples:
    python -m clip_embedder.scripts.extract_receipt receipt1.jpg receipt2.jpg
    python -m clip_embedder.scripts.extract_receipt --lines box/000.csv box/009.csv     # from text lines, no OCR
    python -m clip_embedder.scripts.extract_receipt --extractor rules scans/*.jpg > receipts.jsonl
    python -m clip_embedder.scripts.extract_receipt --ingest ~/receipts/2024/                # into the ledger
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
    p.add_argument("paths", nargs="*", type=Path, help="receipt photos (JPEG, PNG, …) or folders of them")
    p.add_argument("--lines", nargs="+", type=Path, default=[],
                   help="text-line files in the SROIE box format (x1,y1,…,x4,y4,text) to extract from instead of "
                        "photos")
    p.add_argument("--extractor", choices=("auto", "learned", "rules", "openai", "bedrock"), default=None,
                   help="default: RECEIPT_EXTRACTOR (openai / bedrock: a hosted model reads the photo; the ANALYSIS_* "
                        "settings say which)")
    p.add_argument("--langs", default=None,
                   help="the receipts' languages (default: RECEIPT_LANGS): eng (RapidOCR) or Tesseract codes, e.g. "
                        "kor+eng")
    p.add_argument("--ingest", action="store_true",
                   help="write each photo's receipt to the ledger in the project's database (DATABASE_URL or the "
                        "embedded one)")
    args = p.parse_args(argv)
    if not args.paths and not args.lines:
        p.error("give receipt photos, or --lines FILE.csv …")
    if args.ingest and args.lines:
        p.error("--ingest takes photos (the ledger keeps each receipt's photo), not --lines")
    if args.lines and args.extractor in ("openai", "bedrock"):
        p.error(f"--extractor {args.extractor} reads photos, not --lines")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("clip_embedder").setLevel(logging.INFO)
    from clip_embedder.config import Settings  # noqa: PLC0415
    from clip_embedder.images import list_images  # noqa: PLC0415
    from clip_embedder.receipts.ledger import Reader  # noqa: PLC0415

    overrides = {"receipt_extractor": args.extractor, "receipt_langs": args.langs}
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v})
        reader = Reader.from_settings(settings)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    photos = [f for p in args.paths for f in (list_images(p) if p.is_dir() else [p])]
    ledger = Ledger(settings, reader.version) if args.ingest else None
    failed = 0
    try:
        for path in [*photos, *args.lines]:
            failed += _one(path, path in args.lines, settings, reader, ledger)
    finally:
        if ledger is not None:
            ledger.close()
    return 1 if failed else 0


class Ledger:
    """The ledger in the project's database and the originals store, for --ingest."""

    def __init__(self, settings, version: str | None):
        from clip_embedder.db.store import Store  # noqa: PLC0415
        from clip_embedder.intake.originals import open_originals  # noqa: PLC0415

        self.store = Store.open(settings)
        self.originals = open_originals(settings.storage_root)
        self.version = version

    def add(self, path: Path, image, receipt) -> tuple[int, bool]:
        """Store the photo and write its receipt (the same photo twice is one receipt). Returns (id, whether new)."""
        import io  # noqa: PLC0415

        from PIL import Image  # noqa: PLC0415

        from clip_embedder.images import sha256_bytes  # noqa: PLC0415
        from clip_embedder.intake.originals import original_key  # noqa: PLC0415
        from clip_embedder.receipts.ledger import file_receipt  # noqa: PLC0415

        data = path.read_bytes()
        sha = sha256_bytes(data)
        with Image.open(io.BytesIO(data)) as f:  # the decoded copy is RGB-converted: the format is in the header
            fmt = f.format
        key = original_key(sha, fmt)
        self.originals.put(key, data)
        return file_receipt(self.store, receipt, sha256=sha, original=key, file_name=path.name, size=image.size,
                            extractor_version=self.version)

    def close(self) -> None:
        self.store.close()


def _one(path: Path, is_lines: bool, settings, reader, ledger: Ledger | None) -> int:
    """Extract one receipt and print its JSON line (written to the ledger with --ingest). Returns 1 on failure."""
    from clip_embedder.analysis.providers.base import ProviderError  # noqa: PLC0415
    from clip_embedder.images import ImageError, read_image_file  # noqa: PLC0415
    from clip_embedder.receipts.sroie import read_box_csv  # noqa: PLC0415

    t = time.perf_counter()
    try:
        if is_lines:
            receipt = reader.extractor.extract(read_box_csv(path))
        else:
            image, _ = read_image_file(path, max_bytes=settings.index_max_bytes,
                                       max_pixels=settings.index_max_pixels)
            receipt = reader.read(image)
    except (OSError, ImageError, ProviderError) as e:
        print(json.dumps({"path": str(path), "error": str(e)}), flush=True)
        return 1
    extra: dict = {}
    if ledger is not None:
        receipt_id, new = ledger.add(path, image, receipt)
        extra = {"receipt_id": receipt_id, "new": new}
    print(json.dumps({"path": str(path), **extra, **receipt.model_dump(mode="json"),
                      "elapsed_ms": round((time.perf_counter() - t) * 1000, 1)}, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
