#!/usr/bin/env python
"""The detector's operating points: accuracy against latency at several input sizes and runtimes, one MLflow run.

For each input size: mAP50-95 and mAP50 on a split of a COCO subset (yolov5's own validation, as
`yolov5/evaluate.py` runs it), then the serving path's latency — this project's `Detector` (letterbox, forward,
NMS) on each runtime (torch, ONNX Runtime, OpenVINO; f32 everywhere, see `clip_embedder.models.runtimes`), ms per
image (median over the split's images, one at a time, after a warm-up). ONNX Runtime and OpenVINO serve the same
f32 export as torch, so the accuracy of a size holds for its runtimes (their boxes agree to < 1e-3 px; see
`benchmarks/bench_forward.py`). Logged: metrics `op/<imgsz>/mAP50-95`, `op/<imgsz>/mAP50`,
`op/<imgsz>/<runtime>/ms_per_image`; artifacts `operating_points.csv` and `operating_points.png` (accuracy
against latency, one line per runtime). `DETECTOR_IMGSZ` and `DETECTOR_RUNTIME` choose the point the service uses.

Example:
  python yolov5/operating_points.py --weights models/best.pt --coco_subset_data_version version_1 \\
      --imgsz 320,416,512,640 --runtimes torch,onnx,openvino --task test
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlflow_common as mc
from evaluate import resolve_weights


def accuracy(weights: str, data: Path, imgsz: int, task: str, work: Path) -> tuple[float, float]:
    """(mAP50-95, mAP50) of `weights` at `imgsz` on `task` of `data` (yolov5 val, conf 0.001, IoU 0.6)."""
    from yolov5 import val as yval

    names = mc.dataset_names(data)
    eval_weights = mc.subset_head_weights(weights, names, work / "_init")
    (_, _, map50, map5095, *_), *_ = yval.run(data=str(data), weights=eval_weights, batch_size=16, imgsz=imgsz,
                                                 task=task, device="cpu", workers=0, project=str(work),
                                                 name=f"val{imgsz}", exist_ok=True, plots=False, half=False)
    return float(map5095), float(map50)


def latency_ms(weights: str, imgsz: int, runtime: str, images: list[Path], export_dir: Path) -> float:
    """Median ms per image of the serving `Detector` at `imgsz` on `runtime`, one image at a time."""
    from PIL import Image

    from clip_embedder.config import Settings
    from clip_embedder.models.detector import load_detector

    det = load_detector(Settings(_env_file=None, detector_weights=weights, detector_imgsz=imgsz,
                                 detector_runtime=runtime, export_dir=str(export_dir)))
    pics = [Image.open(p).convert("RGB") for p in images]
    det.detect(pics[:1])  # warm-up: sessions, allocations
    times = []
    for img in pics:
        t = time.perf_counter()
        det.detect([img])
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for runtime in sorted({r["runtime"] for r in rows}):
        pts = sorted((r["ms_per_image"], r["mAP50-95"], r["imgsz"]) for r in rows if r["runtime"] == runtime)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=runtime)
        for ms, m, sz in pts:
            ax.annotate(str(sz), (ms, m), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("ms per image (serving path, one at a time)")
    ax.set_ylabel("mAP50-95")
    ax.set_title("detector operating points (labels: input size)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def measure(weights: str, data: Path, sizes: list[int], runtimes: list[str], task: str, n_images: int,
            work: Path) -> list[dict]:
    """One row per (input size, runtime): imgsz, runtime, mAP50-95, mAP50, ms_per_image."""
    images = mc.split_images(data, task)[:n_images]
    rows = []
    for sz in sizes:
        m5095, m50 = accuracy(weights, data, sz, task, work)
        for rt in runtimes:
            ms = latency_ms(weights, sz, rt, images, work / "exported")
            rows.append({"imgsz": sz, "runtime": rt, "mAP50-95": round(m5095, 4), "mAP50": round(m50, 4),
                         "ms_per_image": round(ms, 2)})
            print(f"imgsz {sz:4d} {rt:9s} mAP50-95 {m5095:.4f} mAP50 {m50:.4f} {ms:7.1f} ms/image", flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python yolov5/operating_points.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="local .pt, runs:/… or models:/name@alias")
    mc.add_dataset_args(p)
    p.add_argument("--task", choices=("test", "val"), default="test")
    p.add_argument("--imgsz", default="320,416,512,640", help="input sizes, comma separated (multiples of 32)")
    p.add_argument("--runtimes", default="torch,onnx,openvino", help="serving runtimes, comma separated")
    p.add_argument("--images", type=int, default=50, help="images of the split timed per point")
    mc.add_tracking_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import mlflow

    mc.start_tracking(args)
    sizes = [int(s) for s in args.imgsz.split(",")]
    runtimes = [r.strip() for r in args.runtimes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="operating_points_"))
    try:
        data = mc.resolve_data(args.data, args.coco_subset_data_version, args.datasets_root)
        data = mc.materialize_yaml(data, work / "_data")
        weights, run_id = resolve_weights(args.weights, mc.ROOT / "models" / "mlflow")
        tags = {"task": f"operating_points/{args.task}", "weights_file": Path(weights).name,
                "git_commit": mc.git_commit(), **mc.system_info(), **({"training_run_id": run_id} if run_id else {})}
        with mlflow.start_run(run_name="operating_points", tags=tags) as run:
            mlflow.log_params({"imgsz": args.imgsz, "runtimes": args.runtimes, "task": args.task,
                               "images_timed": args.images})
            rows = measure(weights, data, sizes, runtimes, args.task, args.images, work)
            for r in rows:
                mlflow.log_metric(f"op/{r['imgsz']}/{r['runtime']}/ms_per_image", r["ms_per_image"])
                mlflow.log_metric(f"op/{r['imgsz']}/mAP50-95", r["mAP50-95"])
                mlflow.log_metric(f"op/{r['imgsz']}/mAP50", r["mAP50"])
            table, figure = work / "operating_points.csv", work / "operating_points.png"
            with open(table, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            plot(rows, figure)
            mlflow.log_artifact(str(table))
            mlflow.log_artifact(str(figure))
            print(f"MLflow run {run.info.run_id}: {len(rows)} operating points")
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
