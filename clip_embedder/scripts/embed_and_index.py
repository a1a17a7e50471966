"""Detect, crop and embed a folder of images (or a COCO subset version) into pgvector + FAISS.

Examples:
    python -m clip_embedder.scripts.embed_and_index --split all --dataset_path datasets/coco_subset/version_1
    python -m clip_embedder.scripts.embed_and_index --dataset_path ~/Pictures --spaces mobilenet,text
    python -m clip_embedder.scripts.embed_and_index --dataset_path /mnt/photos --runner ray --ray-address head:6379

Settings (env or `.env`, see `.env.example`) choose the database, weights and crop policy; the
flags below override the most common ones. Re-running indexes nothing twice (images are keyed by
content sha256); a newly activated space is filled for images indexed before, and a change of tagger
or OCR (--ocr tesseract) re-tags / re-reads indexed images, re-embedding only descriptions that changed.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from clip_embedder import offline  # noqa: F401
from clip_embedder.models.registry import EMBEDDING_SPACES, OCR_ENGINES, TAGGERS

SPLITS = ("train", "val", "test")


def collect_files(dataset_path: Path, split: str) -> list[tuple[Path, str | None]]:
    """`(image path, split)` pairs. A dataset version folder has `<split>/images/`; any other folder
    is indexed as a whole with split None.

    Raises:
        FileNotFoundError: the folder (or the requested split) does not exist.
    """
    from clip_embedder.images import list_images  # noqa: PLC0415

    if not dataset_path.exists():
        raise FileNotFoundError(f"{dataset_path} does not exist (build a subset with scripts/extract_coco_subset.py)")
    has_splits = any((dataset_path / s / "images").is_dir() for s in SPLITS)
    if not has_splits:
        if split not in ("all", None):
            raise FileNotFoundError(f"{dataset_path} has no {split}/images folder; use --split all for a plain folder")
        return [(p, None) for p in list_images(dataset_path)]
    wanted = SPLITS if split == "all" else (split,)
    out: list[tuple[Path, str | None]] = []
    for s in wanted:
        folder = dataset_path / s / "images"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist")
        out += [(p, s) for p in list_images(folder)]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clip_embedder.scripts.embed_and_index",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset_path", "--dataset-path", type=Path, required=True,
                   help="a datasets/coco_subset/version_N folder, or any folder of images")
    p.add_argument("--split", default="all", choices=("all",) + SPLITS, help="which split to index (default: all)")
    p.add_argument("--spaces", default=None,
                   help=f"comma-separated spaces among {', '.join(EMBEDDING_SPACES.names())} (default: SPACES setting)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: BATCH_SIZE)")
    p.add_argument("--limit", type=int, default=None, help="index at most this many images (a quick trial)")
    p.add_argument("--faiss-gpu", action="store_true", help="use faiss-gpu when installed and a GPU exists")
    p.add_argument("--device", default=None, help="torch device for the models: cpu, 0, cuda:0 (default: DEVICE)")
    p.add_argument("--recreate-space", action="store_true",
                   help="when a space was built by another model, drop its vectors and rebuild it")
    p.add_argument("--redetect", action="store_true",
                   help="detect again the images indexed by another detector (e.g. a new champion) and replace "
                        "their objects")
    p.add_argument("--ocr", default=None, choices=OCR_ENGINES.names(),
                   help="read text in the photos (default: OCR setting); a change re-reads indexed images")
    p.add_argument("--tagger", default=None, choices=TAGGERS.names(),
                   help="ImageNet tags per image and crop (default: TAGGER setting)")
    p.add_argument("--queue-enrichments", action="store_true",
                   help="write the images searchable without reading their text, and queue OCR as follow-up jobs "
                        "for the workers (python -m clip_embedder.worker); default: read inline, so a finished "
                        "command means a finished index")
    p.add_argument("--analyze", action="store_true",
                   help="then analyse each indexed image (a description, the sensitive verdict, labels with boxes; "
                        "ANALYSIS_PROVIDER) unless the same analyser already did; stored for GET "
                        "/api/images/{id}/analysis and the search filters sensitive= / faces= (sequential runner)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--runner", default="sequential", choices=("sequential", "ray"),
                   help="sequential: batches one after another in this process (the default); ray: batches spread "
                        "over a pool of Ray actors, each holding the models and writing to the same database "
                        "(needs pip install -e '.[ray]')")
    p.add_argument("--ray-address", default=None,
                   help="a running Ray cluster (host:port, or 'auto'); default: a local one for this run. Every "
                        "machine needs the project installed, DATABASE_URL reachable, and the images and models at "
                        "the same paths")
    p.add_argument("--ray-actors", type=int, default=None,
                   help="actors in the pool (default: one per GPU of the cluster, else one per CPU)")
    return p


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags override (--spaces, --batch-size, --device, --ocr, --tagger), by setting name."""
    overrides: dict[str, Any] = {}
    if args.spaces:
        overrides["spaces"] = args.spaces
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    for name in ("device", "ocr", "tagger"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    return overrides


def run_sequential(indexer, store, sources: list, args: argparse.Namespace, settings):
    """The sequential runner over `sources`; with --queue-enrichments without OCR, then one enrichment job per image
    queued for the workers; with --analyze, then each image analysed. Returns the run's `IndexStats`."""
    runner = indexer.deferring_enrichments() if args.queue_enrichments else indexer
    stats = runner.run(sources, batch_size=settings.batch_size, progress=not args.no_progress)
    if args.analyze:
        analyse_after(settings, store, indexer, sources, progress=not args.no_progress)
    if args.queue_enrichments and indexer.ocr is not None:
        from clip_embedder.intake.ingest import queue_enrichments  # noqa: PLC0415

        queued = queue_enrichments(store, indexer.enrichment, sources)
        print(f"queued {queued} enrichment job(s) (OCR): `python -m clip_embedder.worker` reads them")
    return stats


def analyse_after(settings, store, indexer, sources: list, *, progress: bool) -> None:
    """--analyze: analyse the indexed images of `sources` (the text the run read is reused) and say how many."""
    from clip_embedder.analysis.jobs import analyse_indexed  # noqa: PLC0415
    from clip_embedder.analysis.local import LocalAnalyser  # noqa: PLC0415
    from clip_embedder.models.registry import ANALYSIS_PROVIDERS  # noqa: PLC0415

    if settings.analysis_provider == "local":
        analyser = LocalAnalyser.from_settings(settings, detector=indexer.detector, extractor=indexer.extractor)
    else:
        analyser = ANALYSIS_PROVIDERS.create(settings.analysis_provider, settings)
    run = analyse_indexed(store, analyser, [(s.path, s.file_name) for s in sources if s.storage == "file"], settings,
                          ocr_done=lambda e: indexer.ocr is not None and not indexer.needs_enrichment(e),
                          embedders=indexer.embedders, progress=progress)
    print(f"analysed {run.analysed} image(s) with {analyser.signature} ({run.skipped} already analysed or not "
          f"indexed, {run.failed} failed)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: exit hooks run, so the embedded PostgreSQL is released
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("clip_embedder").setLevel(logging.INFO)
    from clip_embedder.config import Settings  # noqa: PLC0415
    from clip_embedder.db.store import Store  # noqa: PLC0415
    from clip_embedder.indexing.batch import SourceFile  # noqa: PLC0415
    from clip_embedder.indexing.faiss_index import SpaceIndex  # noqa: PLC0415
    from clip_embedder.indexing.faiss_tools import warn_if_no_faiss_gpu  # noqa: PLC0415
    from clip_embedder.indexing.pipeline import Indexer  # noqa: PLC0415
    from clip_embedder.models.detector import load_detector  # noqa: PLC0415
    from clip_embedder.models.embedders import SpaceMismatchError, create_embedder  # noqa: PLC0415
    from clip_embedder.models.runtimes import freeze_heap  # noqa: PLC0415

    settings = Settings(**settings_overrides(args))
    if args.faiss_gpu:
        warn_if_no_faiss_gpu()
    try:
        files = collect_files(args.dataset_path, args.split)
        if args.limit:
            files = files[: args.limit]
        if not files:
            print(f"error: no images found under {args.dataset_path}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        detector = load_detector(settings)
        embedders = {s: create_embedder(s, settings) for s in settings.spaces}
        store = Store.open(settings)
        for emb in embedders.values():
            store.spaces.ensure(emb.identity, recreate=args.recreate_space)
            emb.load()
        root = args.dataset_path if args.dataset_path.is_dir() else args.dataset_path.parent
        sources = [SourceFile.from_folder(p, root, split) for p, split in files]
        if args.runner == "ray":  # the actors load their own models; the driver's load exported them once
            from clip_embedder.indexing.ray_runner import run_on_ray  # noqa: PLC0415

            load_s = time.perf_counter() - t0
            stats = run_on_ray(settings, sources, database_url=store.url, redetect=args.redetect,
                               address=args.ray_address, actors=args.ray_actors, progress=not args.no_progress)
        else:
            indexer = Indexer.from_settings(settings, store, detector, embedders, redetect=args.redetect)
            freeze_heap()  # the models' objects stay out of every full collection (runtimes.freeze_heap)
            load_s = time.perf_counter() - t0
            stats = run_sequential(indexer, store, sources, args, settings)
        t = time.perf_counter()
        for emb in embedders.values():
            SpaceIndex.for_settings(store, emb.identity, settings)
        faiss_s = time.perf_counter() - t
        store.close()
    except (FileNotFoundError, SpaceMismatchError, RuntimeError, ValueError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for err in stats.errors[:20]:
        print(f"skipped: {err}", file=sys.stderr)
    actors = f" actors_load={stats.timings['actor_load']:.2f}s" if "actor_load" in stats.timings else ""
    print(f"{stats.summary()} | models_load={load_s:.2f}s{actors} faiss={faiss_s:.2f}s spaces={','.join(embedders)} "
          f"runner={args.runner}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
