"""Retrieval quality per embedding space on a COCO subset.

- crop precision@10: each ground-truth box of the test split is cropped (same crop policy as the
  index) and searched among the ground-truth crops of train+val; a hit is a neighbour with the query's
  class. Exact search (FAISS flat inner product on L2-normalised vectors).
- text hit@10 / precision@10 per class name: the whole subset is indexed (detections, as in
  production) and each class name is searched through the text spaces; a hit is an image among the
  top 10 whose annotations contain the class.
- words (`quality_words.py`): all of COCO128 + the nine photos of ../shared/datasets/photos, before /
  after ImageNet tags, hybrid lexical search and relevance floors: 24 concepts outside the subset's
  classes, synonyms, photo concepts, negative queries ("no match"), the text space's floor calibration,
  OCR of rendered English and Korean signs, and the tagger's indexing cost.

    python benchmarks/bench_quality.py [--dataset datasets/coco_subset/version_1] [--spaces mobilenet,text]
                                       [--detector subset7|coco80] [--skip-ocr] [--skip-words]
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import quality_words
from PIL import Image

from common import bench_parser, bench_settings, ensure_subset, machine


def gt_crops(dataset: Path, splits: tuple[str, ...], policy) -> tuple[list[Image.Image], list[str]]:
    crops, labels = [], []
    for split in splits:
        d = json.loads((dataset / "annotations" / f"instances_{split}.json").read_text())
        cats = {c["id"]: c["name"] for c in d["categories"]}
        ims = {im["id"]: im for im in d["images"]}
        for a in d["annotations"]:
            if a.get("iscrowd"):
                continue
            im = ims[a["image_id"]]
            x, y, w, h = a["bbox"]
            box = policy.crop_box((x, y, x + w, y + h), im["width"], im["height"])
            if box is None:
                continue
            with Image.open(dataset / split / "images" / im["file_name"]) as f:
                crops.append(f.convert("RGB").crop(box))
            labels.append(cats[a["category_id"]])
    return crops, labels


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--k", type=int, default=10, help="cut-off of precision@k and hit@k")
    quality_words.add_arguments(p)
    args = p.parse_args()

    import faiss

    from clip_embedder.db.store import Store
    from clip_embedder.indexing.crops import CropPolicy
    from clip_embedder.indexing.faiss_index import SpaceIndex
    from clip_embedder.indexing.pipeline import Indexer
    from clip_embedder.models.detector import load_detector
    from clip_embedder.models.embedders import create_embedder
    from clip_embedder.search.service import SearchService

    work = Path(tempfile.mkdtemp(prefix="quality_"))
    dataset = ensure_subset(args.dataset, work)
    s = bench_settings(work, args.spaces, args.clip_pretrained, args.clip_config)
    policy = CropPolicy(s.crop_padding, s.crop_min_side, s.crop_max_aspect)
    print(f"machine: {machine()}\ndataset: {dataset}, k={args.k}")

    q_crops, q_labels = gt_crops(dataset, ("test",), policy)
    g_crops, g_labels = gt_crops(dataset, ("train", "val"), policy)
    print(f"crop retrieval: {len(q_crops)} test crops against {len(g_crops)} train+val crops")
    g_arr, q_arr = np.array(g_labels), np.array(q_labels)
    classes = sorted(set(q_labels))
    base = np.mean([np.mean(g_arr == lab) for lab in q_labels])
    base_macro = np.mean([np.mean(g_arr == c) for c in classes])
    print(f"  {'random':<10} precision@{args.k} = {base:.3f} (macro {base_macro:.3f}; expected for a random ranking)")
    embedders = {name: create_embedder(name, s).load() for name in s.spaces}
    for name, e in embedders.items():
        if e.source == "description":  # a description of the ground-truth label would be the answer itself
            print(f"  {name:<10} (skipped: embeds descriptions, not pixels)")
            continue
        g = e.embed_images(g_crops)
        q = e.embed_images(q_crops)
        index = faiss.IndexFlatIP(g.shape[1])
        index.add(g)
        _, nearest = index.search(q, args.k)
        hits = g_arr[nearest] == q_arr[:, None]
        per_class = {c: hits[q_arr == c].mean() for c in classes}
        print(f"  {name:<10} precision@{args.k} = {hits.mean():.3f} (macro over classes "
              f"{np.mean(list(per_class.values())):.3f}) | per class: "
              + ", ".join(f"{c} {v:.2f} (n={int((q_arr == c).sum())})" for c, v in per_class.items()))

    # text search over the production index of the whole subset
    detector = load_detector(s)
    store = Store.open(s)
    for e in embedders.values():
        store.spaces.ensure(e.identity)
    files = [(f, sp) for sp in ("train", "val", "test") for f in sorted((dataset / sp / "images").glob("*"))]
    Indexer.from_settings(s, store, detector, embedders).run(files, progress=False)
    for e in embedders.values():
        SpaceIndex.load_or_build(store, e.identity, s.faiss_dir)
    svc = SearchService.create(s, store, detector)
    gt: dict[str, set[str]] = defaultdict(set)
    for split in ("train", "val", "test"):
        d = json.loads((dataset / "annotations" / f"instances_{split}.json").read_text())
        cats = {c["id"]: c["name"] for c in d["categories"]}
        names = {im["id"]: im["file_name"] for im in d["images"]}
        for a in d["annotations"]:
            gt[names[a["image_id"]]].add(cats[a["category_id"]])
    all_classes = [c["name"] for c in json.loads((dataset / "manifest.json").read_text())["categories"]]
    text_spaces = [n for n, e in embedders.items() if e.supports_text_queries]
    print(f"text search over {len(files)} indexed images (spaces {text_spaces}):")
    hit_total = prec_total = 0.0
    for c in all_classes:
        n_rel = sum(c in v for v in gt.values())
        hits = svc.search_text(c, top_k=args.k).hits
        rel = [c in gt[Path(store.images.get(h.image_id).image.path).name] for h in hits]
        hit_total += any(rel)
        prec_total += np.mean(rel) if rel else 0.0
        print(f"  {c!r:<14} hit@{args.k} = {int(any(rel))}  precision@{args.k} = {np.mean(rel):.2f} "
              f"(images with it: {n_rel})")
    print(f"  mean hit@{args.k} = {hit_total / len(all_classes):.3f}, "
          f"mean precision@{args.k} = {prec_total / len(all_classes):.3f}")
    store.close()
    if not args.skip_words:
        print("words (COCO128 + photos):")
        quality_words.run(args)


if __name__ == "__main__":
    main()
