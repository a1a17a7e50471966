"""Train the learned receipt extractor on receipts in the SROIE layout, score it by k-fold cross-validation, log the
run to MLflow and register it (`receipt-extractor`; the alias `champion` moves when its F1 beats the holder's).

The receipts are read from a local copy (RECEIPTS_DIR or --receipts: `key/` and `box/`, `img/` not needed). The
official source is the ICDAR 2019 SROIE challenge (https://rrc.cvc.uab.es/?ch=13, registration needed).

Examples:
    python -m clip_embedder.scripts.train_receipts --receipts /data/receipts_sroie
    python -m clip_embedder.scripts.train_receipts --folds 10 --max-iter 500 --no-register
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def cross_validate(receipts: list, folds: int, **params) -> dict:
    """Micro P/R/F1 and per field over k folds (receipt i in fold i mod k), from the ground-truth lines."""
    from clip_embedder.receipts.learned import LearnedExtractor  # noqa: PLC0415
    from clip_embedder.receipts.sroie import Score  # noqa: PLC0415

    score = Score()
    for f in range(folds):
        train = [(r.lines, r.key) for i, r in enumerate(receipts) if i % folds != f]
        model = LearnedExtractor.train(train, **params)
        for i, r in enumerate(receipts):
            if i % folds == f:
                score.add(model.extract(r.lines), r.key)
    return score.summary()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clip_embedder.scripts.train_receipts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--receipts", type=Path, default=None, help="receipts in the SROIE layout (default: RECEIPTS_DIR)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--max-iter", type=int, default=300, help="boosting iterations (default 300)")
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--max-depth", type=int, default=6)
    p.add_argument("--no-register", action="store_true", help="log the run, do not register it")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    args = p.parse_args(argv)
    from clip_embedder.config import Settings  # noqa: PLC0415
    from clip_embedder.models.mlflow_registry import configure_mlflow  # noqa: PLC0415
    from clip_embedder.receipts.learned import LearnedExtractor  # noqa: PLC0415
    from clip_embedder.receipts.registry import log_run  # noqa: PLC0415
    from clip_embedder.receipts.sroie import read_layout  # noqa: PLC0415

    settings = Settings()
    folder = args.receipts or settings.receipts_dir
    if folder is None:
        print("error: no receipts: pass --receipts DIR or set RECEIPTS_DIR to a folder in the SROIE layout "
              "(key/, box/; the official source: https://rrc.cvc.uab.es/?ch=13)", file=sys.stderr)
        return 2
    try:
        receipts = read_layout(folder, text_only=True)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params = {"max_iter": args.max_iter, "learning_rate": args.learning_rate, "max_depth": args.max_depth}
    t = time.perf_counter()
    scores = cross_validate(receipts, args.folds, **params)
    model = LearnedExtractor.train([(r.lines, r.key) for r in receipts], **params)
    configure_mlflow(args.tracking_uri or settings.mlflow_tracking_uri)
    run_id, version, moved = log_run(model, {**params, "folds": args.folds, "receipts": len(receipts)}, scores,
                                     register=not args.no_register)
    per = ", ".join(f"{k} {v['f1']:.3f}" for k, v in scores["per_field"].items())
    print(f"{len(receipts)} receipts, {args.folds}-fold F1 {scores['f1']:.3f} ({per}); run {run_id}"
          + (f", registered version {version}" + (" (champion)" if moved else "") if version else "")
          + f" in {time.perf_counter() - t:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
