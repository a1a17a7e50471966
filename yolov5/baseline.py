#!/usr/bin/env python
"""Register the pretrained detector as an MLflow run, evaluated on a subset, so the service has a model
from MLflow before any training.

The COCO-pretrained checkpoint's head is cut to the subset's classes (see
`mlflow_common.subset_head_weights`), logged as `weights/best.pt`, evaluated on the val split (its
`best/*` metrics, the champion comparison) and the test split (nested evaluation runs), registered,
and given the alias when it beats the holder.

Example:
  python yolov5/baseline.py --weights models/yolov5n.pt --coco_subset_data_version version_1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlflow_common as mc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python yolov5/baseline.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="yolov5n.pt", help="pretrained weights: a path or a name in models/")
    mc.add_dataset_args(p)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--project", default="runs/baseline")
    p.add_argument("--registered-model-name", default=mc.settings().registered_model_name)
    p.add_argument("--alias", default=mc.settings().model_alias)
    mc.add_tracking_args(p)
    p.add_argument("--no-register", action="store_true")
    args = p.parse_args(argv)

    import mlflow
    from evaluate import evaluate
    from promote import register_and_promote

    from clip_embedder.models.detector import file_sha256
    from clip_embedder.models.mlflow_registry import SHA_TAG

    try:
        data = mc.resolve_data(args.data, args.coco_subset_data_version, args.datasets_root)
        weights = mc.local_weights(args.weights)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = mc.cpu_fallback(args.device)
    mc.start_tracking(args)
    data_r = mc.materialize_yaml(data, Path(args.project) / "_data")
    served = Path(mc.subset_head_weights(weights, mc.dataset_names(data_r), Path(args.project) / "_init"))
    manifest, manifest_sha = mc.manifest_of(data_r)
    name = f"baseline_{Path(weights).stem}"
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags({"task": "baseline", "dataset_version": args.coco_subset_data_version or data.parent.name,
                         "dataset_manifest_sha256": manifest_sha or "none", "git_commit": mc.git_commit(),
                         "initial_weights": Path(weights).name, "initial_weights_sha256": file_sha256(weights),
                         "head_cut_to_dataset_classes": str(served != Path(weights)), **mc.system_info()})
        mlflow.log_params({"weights": Path(weights).name, "imgsz": args.imgsz, "epochs": 0})
        # the artifact is named best.pt like a training run's, so one MODEL_URI shape serves both
        # logged as a state dict (weights_only=True loads it), never as a pickle
        from clip_embedder.models.detector import Detector

        best = Detector.save_state_dict(served, Path(args.project) / "_init" / "best.pt")
        mlflow.set_tag(SHA_TAG, file_sha256(best))
        mlflow.log_artifact(str(best), artifact_path="weights")
        if manifest:
            mlflow.log_artifact(str(manifest), artifact_path="dataset")
        common = dict(imgsz=args.imgsz, batch_size=args.batch_size, device=device, project=args.project,
                      training_run_id=run.info.run_id)
        val = evaluate(str(served), data_r, task="val", name=f"{name}_val", **common)
        mlflow.log_metrics({f"best/{k.split('/', 1)[1]}": v for k, v in val.items()
                            if k.startswith("val/") and k.count("/") == 1})
        test = evaluate(str(served), data_r, task="test", name=f"{name}_test", **common)
        mlflow.log_metrics({k: v for k, v in test.items() if k.startswith("test/") and k.count("/") == 1})
        run_id = run.info.run_id
    print(f"baseline run {run_id}: val mAP50-95 {val['val/mAP50-95']:.4f}; test mAP50 {test['test/mAP50']:.4f} "
          f"mAP50-95 {test['test/mAP50-95']:.4f}")
    if not args.no_register:
        register_and_promote(run_id, args.registered_model_name, args.alias, "best/mAP50-95")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
