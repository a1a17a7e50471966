"""Receipts: the rules and the learned extractor scored side by side (SROIE task 3 as the shared README defines it),
(a) from the ground-truth text lines and (b) end to end from the image through our OCR (RapidOCR; Tesseract with
--langs kor+eng).

    python benchmarks/bench_receipts.py --dataset ../shared/datasets/receipts_sroie [--train DIR] [--text-only]
                                        [--folds 5] [--langs eng] [--json OUT]
    python benchmarks/bench_receipts.py --korean 12          # Korean receipts rendered by korean_receipts.py

--korean N renders N Korean receipts (benchmarks/korean_receipts.py, NanumGothic) into a temporary folder, reads
them with Tesseract kor+eng and also counts the receipts whose merchant, date, total and every item (name,
quantity, unit price, amount) are right.

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


def ocr_lines(receipts: list[SroieReceipt], langs: str = "eng") -> tuple[dict[str, list], list[float]]:
    """Each receipt's lines read from its image by the service's receipt OCR for `langs` (RECEIPT_LANGS: eng →
    RapidOCR, else Tesseract), and the ms each took."""
    from types import SimpleNamespace

    from PIL import Image

    from clip_embedder.receipts.ledger import Reader

    engine = Reader.from_settings(SimpleNamespace(receipt_langs=langs, ocr_min_confidence=0.5,
                                                  receipt_extractor="rules")).ocr.load()
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


def items_right(folder: Path, dataset: list[SroieReceipt], read: dict[str, list], *,
                spaces: bool = True) -> dict[str, int]:
    """Rendered receipts (their items/ ground truth) whose merchant, date, total — and every item — the rules read
    right end to end. With `spaces` False, names are compared without their spaces (Korean word spacing is loose:
    "이마트성수점" is "이마트 성수점")."""
    from clip_embedder.receipts.sroie import field_right

    def name(text: str | None) -> str:
        return (text or "") if spaces else (text or "").replace(" ", "")

    out = {"receipts": len(dataset), "merchant": 0, "date": 0, "total": 0, "items": 0, "all": 0}
    for r in dataset:
        got = RulesExtractor().extract(read[r.id])
        truth = json.loads((folder / "items" / f"{r.id}.json").read_text(encoding="utf-8"))
        ok = {f: field_right(f, getattr(got, f), r.key[f]) for f in ("date", "total")}
        ok["merchant"] = name(got.merchant) == name(r.key["merchant"])
        ok["items"] = [(name(i.name), i.quantity, i.unit_price, i.amount) for i in got.items] == [
            (name(t["name"]), t["quantity"], t["unit_price"], t["amount"]) for t in truth]
        for f, v in ok.items():
            out[f] += v
        out["all"] += all(ok.values())
        if not all(ok.values()) and not spaces:
            print(f"    {r.id}: wrong {[f for f, v in ok.items() if not v]}")
    return out


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
    p.add_argument("--langs", default="eng", help="RECEIPT_LANGS for the end-to-end OCR: eng (RapidOCR) or "
                                                   "Tesseract codes (kor+eng)")
    p.add_argument("--korean", type=int, default=0, metavar="N",
                   help="score N rendered Korean receipts (sets --dataset to them and --langs kor+eng)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.korean:
        import tempfile

        import korean_receipts

        args.dataset, args.langs = Path(tempfile.mkdtemp(prefix="korean-receipts-")), "kor+eng"
        korean_receipts.write(args.dataset, args.korean)
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
        read, ocr_ms = ocr_lines(dataset, args.langs)
        engine = "RapidOCR" if args.langs == "eng" else f"Tesseract {args.langs}"
        print(f"  OCR ({engine}): p50 {pct(ocr_ms, 50):.0f} ms, p99 {pct(ocr_ms, 99):.0f} ms per receipt")
        for name in results:
            results[name]["end_to_end"], ms = score(name, pairs, lambda r: read[r.id])
            show(name, "end_to_end", results[name]["end_to_end"], ms)
        if all(r.id in read for r in train):  # the learned extractor trained on OCR lines, as it reads them
            results["learned_on_ocr"] = {}
            results["learned_on_ocr"]["end_to_end"], ms = score("learned", pairs, lambda r: read[r.id],
                                                                train_lines_of=lambda r: read[r.id])
            show("learned*", "end_to_end", results["learned_on_ocr"]["end_to_end"], ms)
            print("  (learned*: trained on the OCR lines of its training folds, the text it reads at run time)")
    if args.korean and not args.text_only:
        for label, spaces in (("korean", True), ("korean_without_spaces", False)):
            results[label] = k = items_right(args.dataset, dataset, read, spaces=spaces)
            print(f"  rules, end to end{'' if spaces else ', names compared without spaces'}: {k['all']} of "
                  f"{k['receipts']} receipts entirely right (merchant {k['merchant']}, date {k['date']}, total "
                  f"{k['total']}, every item {k['items']})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
