#!/usr/bin/env python
"""Train YOLOv5 on a COCO subset version through the `yolov5` package, logging one MLflow run.

Logged: every hyperparameter and option (params); the dataset version, its manifest sha256 and
the git commit (tags); per-epoch losses, precision, recall, mAP50, mAP50-95 (step metrics); the
final validation of best.pt (`best/*`); best.pt, last.pt, results.csv, the dataset manifest and the
plots (PR curve, confusion matrix, label distribution) as artifacts; system info. A model version is
registered (REGISTERED_MODEL_NAME) and the alias (default `champion`) moves to it only when its
val mAP50-95 beats the current holder's.

Example (the original command; `--device 0` falls back to the CPU with one warning):
  python yolov5/train_mlflow.py --imgsz 640 --batch-size 16 --epochs 80 --data coco_subset.yaml \
    --weights yolov5s.pt --project runs/train --name yolov5_coco_subset --device 0 \
    --coco_subset_data_version version_4

Any other yolov5 trainer option passes through (e.g. --workers 2 --patience 10 --cos-lr).
Pretrained anchors are kept (AutoAnchor off) unless --autoanchor is given.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mlflow_common as mc  # noqa: F401  (sets sys.path and the offline environment first)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python yolov5/train_mlflow.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, add_help=True)
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="train/val image size (px)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--data", default="coco_subset.yaml", help="dataset YAML (ignored when a version is given)")
    p.add_argument("--weights", default="yolov5n.pt", help="initial weights: a local path or a name in models/")
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="yolov5_coco_subset")
    p.add_argument("--device", default="cpu", help="cpu, 0, 0,1 … (CPU fallback without a GPU)")
    p.add_argument("--coco_subset_data_version", "--coco-subset-data-version", default=None,
                   help="datasets/coco_subset/<version> to train on, e.g. version_1")
    p.add_argument("--datasets-root", type=Path, default=mc.ROOT / "datasets" / "coco_subset")
    p.add_argument("--autoanchor", action="store_true", help="let AutoAnchor replace the pretrained anchors")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True, help="render and log plots")
    p.add_argument("--experiment", default=mc.settings().mlflow_experiment_name)
    p.add_argument("--registered-model-name", default=mc.settings().registered_model_name)
    p.add_argument("--alias", default=mc.settings().model_alias)
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--no-register", action="store_true", help="log the run only")
    return p


def main(argv: list[str] | None = None) -> int:
    args, passthrough = build_parser().parse_known_args(argv)
    import mlflow
    import yaml

    from clip_embedder.models.detector import file_sha256
    from clip_embedder.models.mlflow_registry import SHA_TAG, configure_mlflow

    try:
        data = mc.resolve_data(args.data, args.coco_subset_data_version, args.datasets_root)
        weights = mc.local_weights(args.weights)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = mc.cpu_fallback(args.device)
    data_src, data = data, mc.materialize_yaml(data, Path(args.project) / "_data")  # relative `path:` → absolute
    init_weights = mc.subset_head_weights(weights, mc.dataset_names(data), Path(args.project) / "_init")
    manifest, manifest_sha = mc.manifest_of(data)
    configure_mlflow(args.tracking_uri)
    mlflow.set_experiment(args.experiment)

    from yolov5.utils.callbacks import Callbacks

    from yolov5 import train as ytrain

    old_argv = sys.argv
    sys.argv = [sys.argv[0], *passthrough]
    try:
        opt = ytrain.parse_opt(known=False)
    finally:
        sys.argv = old_argv
    opt.imgsz, opt.batch_size, opt.epochs, opt.data = args.imgsz, args.batch_size, args.epochs, str(data)
    opt.weights, opt.project, opt.name, opt.device = init_weights, args.project, args.name, device
    opt.noautoanchor = not args.autoanchor
    opt.noplots = not args.plots

    callbacks = Callbacks()
    state: dict = {"epoch_times": []}
    keys = ["train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
            "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss",
            "x/lr0", "x/lr1", "x/lr2"]

    def on_train_epoch_start():
        state["t"] = time.perf_counter()

    def on_fit_epoch_end(log_vals, epoch, best_fitness, fi):
        metrics = {mc.METRIC_NAMES.get(k, k): float(v) for k, v in zip(keys, log_vals)}
        metrics["fitness"] = float(fi[0] if hasattr(fi, "__len__") else fi)
        state["epoch_times"].append(time.perf_counter() - state.get("t", time.perf_counter()))
        metrics["epoch_seconds"] = state["epoch_times"][-1]
        mlflow.log_metrics(metrics, step=int(epoch))

    def on_train_end(last, best, epoch, results):
        # results: yolov5's validation of best.pt (P, R, mAP50, mAP50-95, box, obj, cls losses)
        names = ["precision", "recall", "mAP50", "mAP50-95"]
        mlflow.log_metrics({f"best/{n}": float(v) for n, v in zip(names, results[:4])})

    callbacks.register_action("on_train_epoch_start", callback=on_train_epoch_start)
    callbacks.register_action("on_fit_epoch_end", callback=on_fit_epoch_end)
    callbacks.register_action("on_train_end", callback=on_train_end)

    with mlflow.start_run(run_name=args.name, log_system_metrics=True) as run_:
        mlflow.set_tags({"dataset_version": args.coco_subset_data_version or data_src.parent.name,
                         "dataset_manifest_sha256": manifest_sha or "none", "dataset_yaml": str(data_src),
                         "git_commit": mc.git_commit(), "task": "train", "initial_weights": Path(weights).name,
                         "initial_weights_sha256": file_sha256(weights),
                         "head_cut_to_dataset_classes": str(init_weights != weights), **mc.system_info()})
        params = {k: (str(v) if not isinstance(v, (int, float, str, bool)) else v) for k, v in vars(opt).items()}
        mlflow.log_params({k: v for k, v in params.items() if v not in (None, "")})
        hyp = opt.hyp if isinstance(opt.hyp, dict) else yaml.safe_load(Path(opt.hyp).read_text())
        mlflow.log_params({f"hyp.{k}": v for k, v in hyp.items()})  # lr0, momentum, augmentation gains …
        if manifest:
            mlflow.log_artifact(str(manifest), artifact_path="dataset")
        ytrain.main(opt, callbacks=callbacks)
        save_dir = Path(opt.save_dir)
        wdir = save_dir / "weights"
        best = wdir / "best.pt"
        if not best.is_file():
            print(f"error: training produced no {best}", file=sys.stderr)
            return 1
        # the tracking server gets state dicts (loaded with weights_only=True), never pickles: whoever can
        # write to it must not be able to run code in the API or the indexer
        from clip_embedder.models.detector import Detector

        logged = save_dir / "mlflow_weights"
        best_sd = Detector.save_state_dict(best, logged / "best.pt")
        mlflow.set_tag(SHA_TAG, file_sha256(best_sd))
        mlflow.log_artifact(str(best_sd), artifact_path="weights")
        if (wdir / "last.pt").is_file():
            mlflow.log_artifact(str(Detector.save_state_dict(wdir / "last.pt", logged / "last.pt")),
                                artifact_path="weights")
        for name in ("results.csv", "opt.yaml", "hyp.yaml"):
            if (save_dir / name).is_file():
                mlflow.log_artifact(str(save_dir / name))
        for name in ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png",
                     "labels.jpg", "labels_correlogram.jpg", "results.png"):
            if (save_dir / name).is_file():
                mlflow.log_artifact(str(save_dir / name), artifact_path="plots")
        times = state["epoch_times"]
        if times:
            mlflow.log_metric("seconds_per_epoch", sum(times) / len(times))
        run_id = run_.info.run_id
        logged = mlflow.get_run(run_id).data.metrics
        best_map = logged.get("best/mAP50-95")
        if best_map is None:  # yolov5 skipped its final validation: the last epoch's value stands in
            best_map = logged.get("val/mAP50-95", 0.0)
            mlflow.log_metric("best/mAP50-95", best_map)
    print(f"MLflow run {run_id}: val mAP50-95 {best_map:.4f}, {len(times)} epochs, "
          f"{(sum(times) / len(times)) if times else 0:.1f} s/epoch, weights {best}")
    if not args.no_register:
        from promote import register_and_promote

        register_and_promote(run_id, args.registered_model_name, args.alias, "best/mAP50-95")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
