"""The indexer against the model-forward limit, and the detector's runtimes side by side.

On the same COCO128 images (default all 128), in one run:
1. the detector's forward + NMS per runtime (torch, onnx, openvino), one image at a time and in batches of
   `--batch-size` (ms per image);
2. the model-forward limit of the indexing pipeline: only the model calls the indexer makes for these images
   (detection with the chosen runtime, MobileNet features of every whole image and crop, the ImageNet head, the
   text space over the distinct descriptions), timed alone → images/s;
3. the indexer itself (the CLI's sequential runner, OCR off) on the same images → images/s and its ratio to
   the limit (what the other stages and the stages adding up one after another cost);
4. with `--ray`: the Ray runner (a local cluster, `--ray-actors` actors) on the same images into a second
   database → images/s with and without its start-up (cluster + actors loading the models), and its ratio to
   the sequential runner: Ray's overhead on one machine.

    python benchmarks/bench_forward.py [--images 128] [--batch-size 16] [--runtime onnx] [--ray]
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from common import SHARED, bench_parser, bench_settings, machine, peak_rss_mb


def timed(fn, repeat: int = 1) -> float:
    """Best wall seconds of `repeat` calls."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--runtime", default="onnx", choices=("torch", "onnx", "openvino"),
                   help="the detector runtime of the limit and of the indexer run")
    p.add_argument("--ray", action="store_true", help="also run the Ray runner on a local cluster")
    p.add_argument("--ray-actors", type=int, default=None, help="actors of the Ray pool (default: one per CPU)")
    args = p.parse_args()

    from clip_embedder.db.store import Store
    from clip_embedder.indexing.batch import SourceFile
    from clip_embedder.indexing.crops import CropPolicy
    from clip_embedder.indexing.describe import describe_image, describe_object
    from clip_embedder.indexing.pipeline import Indexer
    from clip_embedder.models.detector import Detector, load_detector
    from clip_embedder.models.embedders import create_embedder
    from clip_embedder.models.runtimes import freeze_heap
    from clip_embedder.models.tagger import create_tagger

    work = Path(tempfile.mkdtemp(prefix="bench_forward_"))
    files = sorted((SHARED / "datasets" / "coco128" / "images").glob("*.jpg"))[: args.images]
    images = [Image.open(f).convert("RGB") for f in files]
    n, bs = len(images), args.batch_size
    print(f"machine: {machine()}\nimages: {n} COCO128, detector yolov5n 80 classes at 640 px, conf 0.15, "
          f"batches of {bs}")

    weights = SHARED / "models" / "yolov5" / "yolov5n.pt"
    print("detector forward + NMS, ms per image (best of 2):")
    per_runtime = {}
    for rt in ("torch", "onnx", "openvino"):
        try:
            det = Detector.load(weights, conf=0.15, runtime=rt, export_dir=work / "exported")
        except RuntimeError as e:
            print(f"  {rt:<9} not available: {e}")
            continue
        det.detect(images[:2])  # warm-up
        one = timed(lambda d=det: [d.detect([im]) for im in images], 2) / n * 1000
        batched = timed(lambda d=det: [d.detect(images[i:i + bs]) for i in range(0, n, bs)], 2) / n * 1000
        per_runtime[rt] = min(one, batched)
        print(f"  {rt:<9} one at a time {one:6.1f}   batches of {bs} {batched:6.1f}")
    if "torch" in per_runtime:
        for rt, ms in per_runtime.items():
            print(f"  {rt:<9} speed-up over torch: {per_runtime['torch'] / ms:.2f}x")

    s = bench_settings(work, "mobilenet,text", None, None).model_copy(
        update={"detector_runtime": args.runtime, "export_dir": work / "exported",
                "detector_conf": 0.15, "ocr": "off"})
    detector = load_detector(s)
    embedders = {name: create_embedder(name, s).load() for name in s.spaces}
    tagger = create_tagger(s).load()
    policy = CropPolicy(s.crop_padding, s.crop_min_side, s.crop_max_aspect)
    # what the indexer will feed the models: whole images + crops, and their descriptions
    dets = [d for i in range(0, n, bs) for d in detector.detect(images[i:i + bs])]
    crops, descriptions = [], []
    for im, ds in zip(images, dets):
        crops.append(im)
        for d in ds:
            box = policy.crop_box(d.bbox, *im.size)
            if box is not None:
                crops.append(im.crop(box))
                descriptions.append(describe_object(d.label))
        descriptions.append(describe_image([d.label for d in ds]))
    mobilenet, text = embedders["mobilenet"], embedders["text"]
    t_detect = timed(lambda: [detector.detect(images[i:i + bs]) for i in range(0, n, bs)], 2)
    feats = mobilenet.features(crops[:8])
    t_features = timed(lambda: [mobilenet.features(crops[i:i + 64]) for i in range(0, len(crops), 64)], 2)
    feats = mobilenet.features(crops)
    t_head = timed(lambda: tagger.tag(feats), 2)
    distinct = list(dict.fromkeys(descriptions))
    text.embed_texts(["warm-up"])
    t_text = timed(lambda: text._encode(distinct), 2)  # the runtime the indexer uses (TEXT_RUNTIME), no memo
    limit_s = t_detect + t_features + t_head + t_text
    print(f"model-forward limit ({args.runtime} detector, {len(crops)} crops incl. whole images, "
          f"{len(distinct)} distinct descriptions):")
    print(f"  detect {t_detect:.2f}s  mobilenet {t_features:.2f}s  imagenet head {t_head:.2f}s  text {t_text:.2f}s"
          f"  → {limit_s:.2f}s = {n / limit_s:.2f} images/s")

    store = Store.open(s)
    for e in embedders.values():
        store.spaces.ensure(e.identity)
    indexer = Indexer.from_settings(s, store, detector, embedders)
    freeze_heap()  # as the CLI does once its models are loaded
    stats = indexer.run([SourceFile.from_folder(f) for f in files], batch_size=bs, progress=False)
    store.close()
    rate = stats.indexed / stats.seconds
    print(f"indexer: {stats.summary()}")
    print(f"indexer {rate:.2f} images/s = {rate / (n / limit_s):.2f}x the model-forward limit "
          f"({n / limit_s:.2f} images/s)")
    if args.ray:
        from clip_embedder.indexing.ray_runner import run_on_ray

        r = s.model_copy(update={"pgdata_dir": work / "pgdata_ray", "faiss_dir": work / "faiss_ray"})
        store = Store.open(r)
        for e in embedders.values():
            store.spaces.ensure(e.identity)
        t = time.perf_counter()
        ray_stats = run_on_ray(r, [SourceFile.from_folder(f) for f in files], database_url=store.url,
                               actors=args.ray_actors, batch_size=bs, progress=False)
        wall = time.perf_counter() - t
        store.close()
        load, start = ray_stats.timings.get("actor_load", 0.0), ray_stats.timings["ray_start"]
        actors = args.ray_actors or os.cpu_count() or 1
        net = wall - start - load / actors  # the actors load in parallel
        print(f"ray runner: {ray_stats.summary()} | ray_start={start:.2f}s actors_load={load:.2f}s (summed over "
              f"{actors} actors)")
        print(f"ray runner {ray_stats.indexed / wall:.2f} images/s over the whole call ({wall:.1f}s) = "
              f"{ray_stats.indexed / wall / rate:.2f}x the sequential runner; without the cluster start and "
              f"model loading {ray_stats.indexed / net:.2f} images/s = "
              f"{ray_stats.indexed / net / rate:.2f}x")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
