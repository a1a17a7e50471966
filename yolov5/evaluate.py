#!/usr/bin/env python
"""Evaluate YOLOv5 weights on a split of a COCO subset, as an MLflow run of its own.

Logged: mAP50, mAP50-95, precision, recall (metrics `<task>/…`), per-class AP50 and AP50-95 (metrics
and a `per_class_ap.csv` table), the confusion matrix and PR curve (artifacts), speed per image
(ms: preprocess, inference, NMS). The run is linked to the training run that produced the weights
(tag `training_run_id`, and nested under it in the MLflow UI) when the weights come from MLflow or
their sha256 matches a training run's `weights_sha256` tag.

`--weights` is a local file, `runs:/<run_id>/weights/best.pt`, or `models:/<name>@<alias>`.
A COCO-pretrained 80-class checkpoint is evaluated restricted to the subset's classes.

Example:
  python yolov5/evaluate.py --weights models/best.pt --data yolov5/coco_subset.yaml \
      --project runs/eval --name eval_best_model --task test
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import mlflow_common as mc


def resolve_weights(weights: str, cache: Path) -> tuple[str, str | None]:
    """(local path, MLflow run id or None) for a local path or an MLflow URI."""
    if weights.startswith(("runs:/", "models:/")):
        from clip_embedder.config import Settings
        from clip_embedder.models.mlflow_registry import fetch_detector_weights

        fetched = fetch_detector_weights(Settings(_env_file=None, model_uri=weights), cache_dir=cache)
        # never unpickled: the state dict is read with weights_only=True and rebuilt here
        return mc.checkpoint_from_state_dict(fetched.path, cache / fetched.run_id), fetched.run_id
    return mc.local_weights(weights), None


def find_training_run(sha: str) -> str | None:
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.weights_sha256 = '{sha}'",
                              output_format="list", max_results=1)
    return runs[0].info.run_id if runs else None


def evaluate(weights: str, data: Path, *, task: str = "test", imgsz: int = 640, batch_size: int = 16,
             device: str = "cpu", project: str = "runs/eval", name: str = "exp", workers: int = 2,
             training_run_id: str | None = None, run_name: str | None = None) -> dict[str, float]:
    """Validate `weights` on `task` of `data` and log an MLflow run; returns the metrics logged.

    Raises:
        FileNotFoundError: weights or data missing. RuntimeError: the split is absent from the YAML.
    """
    import mlflow
    import yaml
    from yolov5.utils.callbacks import Callbacks
    from yolov5.utils.general import increment_path

    from clip_embedder.models.detector import file_sha256
    from yolov5 import val as yval

    data = mc.materialize_yaml(data, Path(project) / "_data")
    if task not in yaml.safe_load(data.read_text()):
        raise RuntimeError(f"{data} has no {task!r} split")
    names = mc.dataset_names(data)
    eval_weights = mc.subset_head_weights(weights, names, Path(project) / "_init")
    sha = file_sha256(weights)
    training_run_id = training_run_id or find_training_run(sha)
    per_class: dict = {}

    def on_val_end(nt, tp, fp, p, r, f1, ap, ap50, ap_class, confusion_matrix):
        per_class.update({int(c): (int(nt[c]), float(p[i]), float(r[i]), float(ap50[i]), float(ap[i]))
                          for i, c in enumerate(ap_class)})

    cb = Callbacks()
    cb.register_action("on_val_end", callback=on_val_end)
    tags = {"task": f"evaluate/{task}", "weights_file": Path(weights).name, "evaluated_weights_sha256": sha,
            "dataset_yaml": str(data), "git_commit": mc.git_commit(), **mc.system_info()}
    manifest, manifest_sha = mc.manifest_of(data)
    tags["dataset_manifest_sha256"] = manifest_sha or "none"
    if training_run_id:
        tags.update({"training_run_id": training_run_id, "mlflow.parentRunId": training_run_id})
    with mlflow.start_run(run_name=run_name or name, nested=mlflow.active_run() is not None, tags=tags) as run:
        mlflow.log_params({"imgsz": imgsz, "batch_size": batch_size, "task": task, "conf_thres": 0.001,
                           "iou_thres": 0.6, "device": device})
        save_dir = increment_path(Path(project) / name)  # what yolov5 would pick, decided here
        (mp, mr, map50, map5095, *_), maps, map50s, speed = yval.run(
            data=str(data), weights=eval_weights, batch_size=batch_size, imgsz=imgsz, task=task, device=device,
            workers=workers, project=str(save_dir.parent), name=save_dir.name, exist_ok=True, verbose=True,
            plots=True, callbacks=cb, half=False)
        metrics = {f"{task}/precision": mp, f"{task}/recall": mr, f"{task}/mAP50": map50, f"{task}/mAP50-95": map5095,
                   "speed/preprocess_ms": speed[0], "speed/inference_ms": speed[1], "speed/nms_ms": speed[2]}
        rows = []
        for c, (n, p, r, ap50, ap) in sorted(per_class.items()):
            safe = names[c].replace(" ", "_")
            metrics[f"{task}/AP50/{safe}"] = ap50
            metrics[f"{task}/AP50-95/{safe}"] = ap
            rows.append([names[c], n, round(p, 4), round(r, 4), round(ap50, 4), round(ap, 4)])
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        table = save_dir / "per_class_ap.csv"
        with open(table, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "instances", "precision", "recall", "AP50", "AP50-95"])
            w.writerows(rows)
        mlflow.log_artifact(str(table))
        for plot in ("confusion_matrix.png", "PR_curve.png", "F1_curve.png"):
            if (save_dir / plot).is_file():
                mlflow.log_artifact(str(save_dir / plot), artifact_path="plots")
        print(f"MLflow run {run.info.run_id} ({task}): mAP50 {map50:.4f} mAP50-95 {map5095:.4f} "
              f"P {mp:.3f} R {mr:.3f}; {speed[1]:.1f} ms inference per image"
              + (f"; linked to training run {training_run_id}" if training_run_id else ""))
        for row in rows:
            print("  {:<12} n={:<4} P={:<7} R={:<7} AP50={:<7} AP50-95={}".format(*row))
        metrics["run_id"] = run.info.run_id
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python yolov5/evaluate.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="local .pt, runs:/… or models:/name@alias")
    mc.add_dataset_args(p)
    p.add_argument("--task", choices=("test", "val"), default="test")
    p.add_argument("--imgsz", "--img", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--project", default="runs/eval")
    p.add_argument("--name", default="eval")
    mc.add_tracking_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mc.start_tracking(args)
    try:
        data = mc.resolve_data(args.data, args.coco_subset_data_version, args.datasets_root)
        weights, run_id = resolve_weights(args.weights, mc.ROOT / "models" / "mlflow")
        evaluate(weights, data, task=args.task, imgsz=args.imgsz, batch_size=args.batch_size,
                 device=mc.cpu_fallback(args.device), project=args.project, name=args.name, workers=args.workers,
                 training_run_id=run_id)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
