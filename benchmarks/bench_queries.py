"""Text search on the query set (`queries.json`, built by `query_set.py`): COCO128 and the nine photos indexed with
the demo's 7-class detector (or `--detector coco80`), ImageNet tags on, OCR off; every query searched with top_k 10.

Prints, per query form (word, phrase, sentence, count): hit@10, precision@10 of what is returned, and the share of
positive queries answered "nothing" (target ≤ 0.10); the share of negative queries answered "nothing" (target ≥ 0.90);
and the verdict disagreements between the variants of one concept ("dog" / "a dog" / "dogs" / "a photo of a dog":
target 0).

    python benchmarks/bench_queries.py [--detector subset7|coco80] [--work DIR] [--json OUT] [--show N]

--work keeps the indexed database: a second run with the same DIR searches without indexing again.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from common import SHARED, machine

HERE = Path(__file__).resolve().parent
FORMS = ("word", "phrase", "sentence", "count", "pair")


def index(work: Path, detector: str):
    """The service over COCO128 + the photos (indexed on the first run in `work`)."""
    import quality_words

    sys.path.insert(0, str(HERE.parent / "yolov5"))
    weights = str(SHARED / "models" / "yolov5" / "yolov5n.pt")
    if detector == "subset7":
        from mlflow_common import subset_head_weights

        weights = subset_head_weights(weights, quality_words.SUBSET_CLASSES, work / "weights")
    run = quality_words.Run(work, detector, weights, tagger="imagenet", ocr="off")
    if run.store.counts()["images"] == 0:
        folder = work / "library"
        folder.mkdir(exist_ok=True)
        for src in sorted((SHARED / "datasets" / "coco128" / "images").glob("*.jpg")) + sorted(
                (SHARED / "datasets" / "photos").glob("*.jpg")):
            if not (folder / src.name).exists():
                os.symlink(src, folder / src.name)
        t = time.perf_counter()
        stats = run.index(folder)
        print(f"indexed in {time.perf_counter() - t:.0f}s: {stats.summary()}")
    return run


def evaluate(svc, queries: list[dict], k: int = 10) -> tuple[dict, list[dict]]:
    """Figures per form and the verdict of every query."""
    rows = []
    for q in queries:
        hits = svc.search_text(q["query"], top_k=k).hits
        files = [h.file_name for h in hits]
        rel = [f in set(q["relevant"]) for f in files]
        rows.append({**q, "answered": bool(files), "hit": any(rel), "precision": float(np.mean(rel)) if rel else None})
    out: dict = {}
    for form in FORMS:
        pos = [r for r in rows if r["form"] == form and r["relevant"]]
        if pos:
            answered = [r for r in pos if r["answered"]]
            out[form] = {"queries": len(pos), "hit@10": float(np.mean([r["hit"] for r in pos])),
                         "precision@10": float(np.mean([r["precision"] for r in answered])) if answered else 0.0,
                         "nothing": float(np.mean([not r["answered"] for r in pos]))}
    neg = [r for r in rows if not r["relevant"]]
    out["negatives"] = {"queries": len(neg), "nothing": float(np.mean([not r["answered"] for r in neg]))}
    verdicts: dict[str, set[bool]] = defaultdict(set)
    for r in rows:
        if r["concept"] and r["form"] in ("word", "phrase") and r["relevant"]:
            verdicts[r["concept"]].add(r["answered"])
    out["disagreements"] = sum(len(v) > 1 for v in verdicts.values())
    out["concepts"] = len(verdicts)
    return out, rows


def show(name: str, figures: dict) -> None:
    for form in FORMS:
        if form in figures:
            f = figures[form]
            print(f"  {name:<8} {form:<9} n={f['queries']:<3} hit@10 {f['hit@10']:.3f}  precision@10 "
                  f"{f['precision@10']:.3f}  answered nothing {f['nothing']:.3f}")
    print(f"  {name:<8} negatives n={figures['negatives']['queries']} answered nothing "
          f"{figures['negatives']['nothing']:.3f}; verdict disagreements between a concept's variants: "
          f"{figures['disagreements']} of {figures['concepts']} concepts")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", choices=("subset7", "coco80"), default="subset7")
    p.add_argument("--work", type=Path, default=None, help="keep (and reuse) the indexed database here")
    p.add_argument("--queries", type=Path, default=HERE / "queries.json")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--show", type=int, default=0, help="print up to N refused positives and N answered negatives")
    args = p.parse_args(argv)
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="queries_"))
    work.mkdir(parents=True, exist_ok=True)
    queries = json.loads(args.queries.read_text(encoding="utf-8"))["queries"]
    print(f"# bench_queries — {machine()}\n# {len(queries)} queries, detector {args.detector}, index in {work}")
    run = index(work, args.detector)
    svc = run.service()
    t = time.perf_counter()
    figures, rows = evaluate(svc, queries)
    print(f"  ({len(queries)} queries in {time.perf_counter() - t:.1f}s)")
    show("now", figures)
    if args.show:
        refused = [r["query"] for r in rows if r["relevant"] and not r["answered"]]
        wrong = [r["query"] for r in rows if not r["relevant"] and r["answered"]]
        print(f"  refused positives ({len(refused)}): {refused[:args.show]}")
        print(f"  answered negatives ({len(wrong)}): {wrong[:args.show]}")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "rows": rows}, indent=1, ensure_ascii=False))
    run.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
