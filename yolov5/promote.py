#!/usr/bin/env python
"""Register a run's detector weights in the MLflow Model Registry and move an alias to it when it wins.

The alias (default `champion`) moves to the new version only when the run's metric (default
`best/mAP50-95`, the validation mAP50-95 of best.pt) beats the alias holder's; `--force` moves it anyway.

Example:
  python yolov5/promote.py --run-id <run_id> [--name coco-subset-yolov5] [--alias champion] [--force]
"""
from __future__ import annotations

import argparse
import sys

import mlflow_common as mc


def register_and_promote(run_id: str, name: str, alias: str, metric: str = "best/mAP50-95",
                         force: bool = False) -> tuple[str, bool]:
    """Create a model version for `runs:/<run_id>/weights` and move `alias` to it if it is better
    (`clip_embedder.models.mlflow_registry.register_and_promote`).

    Returns:
        (new version number, whether the alias moved).

    Raises:
        RuntimeError: the run has no `metric` or no weights artifact.
    """
    from clip_embedder.models.mlflow_registry import register_and_promote as register

    return register(run_id, "weights", "best.pt", name, alias, metric, force=force,
                    description="YOLOv5 detector trained on a COCO subset")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python yolov5/promote.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-id", required=True)
    p.add_argument("--name", default=mc.settings().registered_model_name)
    p.add_argument("--alias", default=mc.settings().model_alias)
    p.add_argument("--metric", default="best/mAP50-95")
    p.add_argument("--force", action="store_true", help="move the alias even if the run is not better")
    p.add_argument("--tracking-uri", default=None)
    args = p.parse_args(argv)
    from clip_embedder.models.mlflow_registry import configure_mlflow

    configure_mlflow(args.tracking_uri)
    try:
        register_and_promote(args.run_id, args.name, args.alias, args.metric, args.force)
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
