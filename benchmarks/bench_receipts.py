"""Receipts: the rules and the learned extractor scored side by side (SROIE task 3 as the shared README defines it),
(a) from the ground-truth text lines and (b) end to end from the image through our OCR (RapidOCR).

    python benchmarks/bench_receipts.py --dataset ../shared/datasets/receipts_sroie [--train DIR] [--text-only]
                                        [--folds 5] [--json OUT]

The learned extractor is trained on --train (default: the shared receipts). When --train is the --dataset folder it
is scored by k-fold cross-validation (--folds; receipt i in fold i mod k): every receipt is scored by a model that
never saw it. Prints micro precision / recall / F1 and per field, per-receipt ms for OCR and extraction, and writes
{"rules"|"learned": {"gt_text"|"end_to_end": {"precision", "recall", "f1", "per_field": {…}}}} to --json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from clip_embedder.receipts.learned import LearnedExtractor
from clip_embedder.receipts.rules import RulesExtractor
from clip_embedder.receipts.sroie import Score, SroieReceipt, read_layout

from common import SHARED, machine, pct


def folds_of(dataset: list[SroieReceipt], train: list[SroieReceipt], k: int) -> list[tuple[list, list]]:
    """(training receipts, receipts to score) pairs: k folds when both are the same receipts, else one pair."""
    if [r.id for r in dataset] != [r.id for r in train]:
        return [(train, dataset)]
    return [([r for i, r in enumerate(dataset) if i % k != f], [r for i, r in enumerate(dataset) if i % k == f])
            for f in range(k)]


def ocr_lines(receipts: list[SroieReceipt]) -> tuple[dict[str, list], list[float]]:
    """Each receipt's lines read by RapidOCR from its image, and the ms each took."""
    from PIL import Image

    from clip_embedder.models.ocr import RapidOcrEngine

    engine = RapidOcrEngine(0.5).load()
    out, ms = {}, []
    for r in receipts:
        assert r.image is not None
        t = time.perf_counter()
        out[r.id] = engine.read(Image.open(r.image).convert("RGB"))
        ms.append((time.perf_counter() - t) * 1000)
    return out, ms


def score(name: str, pairs: list[tuple[list, list]], lines_of, *, train_lines_of=None,
          seed: int = 0) -> tuple[dict, list[float]]:
    """Score one extractor over the folds; `lines_of(receipt)` gives the lines it reads, `train_lines_of` the lines
    the learned one trains on (default: the ground-truth lines). Returns the summary and the ms of each extraction."""
    s, ms = Score(), []
    train_lines_of = train_lines_of or (lambda r: r.lines)
    for train, test in pairs:
        ex = RulesExtractor() if name == "rules" else LearnedExtractor.train(
            [(train_lines_of(r), r.key) for r in train], seed=seed)
        for r in test:
            t = time.perf_counter()
            s.add(ex.extract(lines_of(r)), r.key)
            ms.append((time.perf_counter() - t) * 1000)
    return s.summary(), ms


def show(name: str, where: str, summary: dict, ms: list[float]) -> None:
    per = "  ".join(f"{f} {v['f1']:.3f}" for f, v in summary["per_field"].items())
    print(f"  {name:8s} {where:10s} P {summary['precision']:.3f}  R {summary['recall']:.3f}  F1 {summary['f1']:.3f}"
          f"  | {per} | extract p50 {pct(ms, 50):.1f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=SHARED / "datasets" / "receipts_sroie")
    p.add_argument("--train", type=Path, default=None, help="receipts to train the learned extractor on (default: "
                                                              "the shared receipts)")
    p.add_argument("--text-only", action="store_true", help="score from the ground-truth lines only (no img/)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    dataset = read_layout(args.dataset, text_only=args.text_only)
    train_dir = args.train or SHARED / "datasets" / "receipts_sroie"
    train = dataset if train_dir.resolve() == args.dataset.resolve() else read_layout(train_dir, text_only=True)
    pairs = folds_of(dataset, train, args.folds)
    how = f"{args.folds}-fold cross-validation" if len(pairs) > 1 else f"trained on {train_dir}"
    print(f"# bench_receipts — {machine()}\n# {len(dataset)} receipts from {args.dataset}; learned: {how}")
    results: dict[str, dict] = {"rules": {}, "learned": {}}
    for name in results:
        results[name]["gt_text"], ms = score(name, pairs, lambda r: r.lines)
        show(name, "gt_text", results[name]["gt_text"], ms)
    if not args.text_only:
        read, ocr_ms = ocr_lines(dataset)
        print(f"  OCR (RapidOCR): p50 {pct(ocr_ms, 50):.0f} ms, p99 {pct(ocr_ms, 99):.0f} ms per receipt")
        for name in results:
            results[name]["end_to_end"], ms = score(name, pairs, lambda r: read[r.id])
            show(name, "end_to_end", results[name]["end_to_end"], ms)
        if all(r.id in read for r in train):  # the learned extractor trained on OCR lines, as it reads them
            results["learned_on_ocr"] = {}
            results["learned_on_ocr"]["end_to_end"], ms = score("learned", pairs, lambda r: read[r.id],
                                                                train_lines_of=lambda r: read[r.id])
            show("learned*", "end_to_end", results["learned_on_ocr"]["end_to_end"], ms)
            print("  (learned*: trained on the OCR lines of its training folds, the text it reads at run time)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
