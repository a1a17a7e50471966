"""Shared by train_mlflow.py and evaluate.py (this folder holds scripts, not a package)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This folder is sys.path[0] when a script here runs; the PyPI package `yolov5` must win, and the
# project root must be importable.
# (it holds no `yolov5` module, and a namespace folder never shadows the installed regular package).
sys.path.insert(0, str(ROOT))

# yolov5's trainer and validator call torch.load on release/training checkpoints, which are pickles of
# yolov5 classes (torch >= 2.6 refuses them by default). These scripts only load weights the user
# names (the official release, their own runs): allow it here, and only here.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

from clip_embedder import offline  # noqa: E402

offline.import_yolov5()

#: yolov5's metric keys → MLflow metric names (MLflow rejects ':' in names)
METRIC_NAMES = {
    "metrics/precision": "val/precision", "metrics/recall": "val/recall",
    "metrics/mAP_0.5": "val/mAP50", "metrics/mAP_0.5:0.95": "val/mAP50-95",
}


def settings():
    """The project settings (MLFLOW_TRACKING_URI, REGISTERED_MODEL_NAME, MODEL_ALIAS, …)."""
    from clip_embedder.config import get_settings  # noqa: PLC0415

    return get_settings()


def add_dataset_args(p, data_help: str = "dataset YAML") -> None:
    """The dataset options every script takes: --data, --coco_subset_data_version, --datasets-root (`resolve_data`
    turns them into a YAML path)."""
    p.add_argument("--data", default="coco_subset.yaml", help=data_help)
    p.add_argument("--coco_subset_data_version", "--coco-subset-data-version", default=None)
    p.add_argument("--datasets-root", type=Path, default=ROOT / "datasets" / "coco_subset")


def add_tracking_args(p) -> None:
    """--experiment and --tracking-uri (`start_tracking` applies them)."""
    p.add_argument("--experiment", default=settings().mlflow_experiment_name)
    p.add_argument("--tracking-uri", default=None)


def start_tracking(args) -> None:
    """Point MLflow at `args.tracking_uri` (default: MLFLOW_TRACKING_URI) and `args.experiment`."""
    import mlflow  # noqa: PLC0415

    from clip_embedder.models.mlflow_registry import configure_mlflow  # noqa: PLC0415

    configure_mlflow(args.tracking_uri)
    mlflow.set_experiment(args.experiment)


def resolve_data(data: str, version: str | None, datasets_root: Path = ROOT / "datasets" / "coco_subset") -> Path:
    """The dataset YAML: `datasets_root/<version>/coco_subset.yaml` when a version is given, else `data`.

    Raises:
        FileNotFoundError: naming the version folder or YAML and the command that builds it.
    """
    if version:
        v = version if version.startswith("version_") else f"version_{version}"
        y = Path(datasets_root) / v / "coco_subset.yaml"
        if not y.is_file():
            have = sorted(p.name for p in Path(datasets_root).glob("version_*"))
            raise FileNotFoundError(f"{y} does not exist (have: {have or 'none'}); build it with "
                                    "python scripts/extract_coco_subset.py")
        return y
    p = Path(data)
    for cand in (p, ROOT / "yolov5" / p, ROOT / p):
        if cand.is_file():
            return cand.resolve()
    raise FileNotFoundError(f"dataset YAML {data} not found")


def materialize_yaml(data_yaml: Path, out_dir: Path) -> Path:
    """`data_yaml` itself when its `path` is absolute; else a copy whose `path` is resolved against the
    YAML's own folder (yolov5 would resolve it against its package folder)."""
    import yaml  # noqa: PLC0415

    d = yaml.safe_load(Path(data_yaml).read_text())
    p = Path(d.get("path") or ".")
    if p.is_absolute():
        return Path(data_yaml)
    d["path"] = str((Path(data_yaml).parent / p).resolve())
    out = Path(out_dir) / f"{Path(data_yaml).stem}.resolved.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(d, sort_keys=False))
    return out


def manifest_of(data_yaml: Path) -> tuple[Path | None, str | None]:
    """The subset manifest beside a dataset YAML and its sha256 (None when absent)."""
    import yaml  # noqa: PLC0415

    from clip_embedder.models.detector import file_sha256  # noqa: PLC0415

    root = Path(yaml.safe_load(data_yaml.read_text()).get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = (data_yaml.parent / root).resolve()
    m = root / "manifest.json"
    if not m.is_file():
        m = data_yaml.parent / "manifest.json"
    return (m, file_sha256(m)) if m.is_file() else (None, None)


def git_commit() -> str:
    """The project's current git commit, or "unknown" outside a checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def system_info() -> dict[str, str]:
    """`sys.*` tags for a run: Python, platform, CPU model and count, torch, CUDA device."""
    import torch  # noqa: PLC0415

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {"sys.python": platform.python_version(), "sys.platform": platform.platform(), "sys.cpu": cpu,
            "sys.cpu_count": str(os.cpu_count()), "sys.torch": torch.__version__,
            "sys.cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def cpu_fallback(device: str) -> str:
    """`device` when usable, else "cpu" after one warning line (a GPU asked for on a machine without one)."""
    import torch  # noqa: PLC0415

    d = str(device).strip().lower()
    if d in ("", "cpu") or torch.cuda.is_available():
        return device
    print(f"WARNING: --device {device} requested but no CUDA GPU is available: running on the CPU", file=sys.stderr)
    return "cpu"


def local_weights(weights: str) -> str:
    """A local weights path (never a download); raises FileNotFoundError naming where to get one."""
    p = Path(weights)
    for cand in (p, ROOT / "models" / p.name, ROOT / p):
        if cand.is_file():
            return str(cand.resolve())
    raise FileNotFoundError(f"weights {weights} not found locally (nothing is downloaded). Pass a path, or fetch "
                            "yolov5n.pt with: python -m clip_embedder.scripts.fetch_assets --download")


def dataset_names(data_yaml: Path) -> list[str]:
    """The class names of a yolov5 dataset YAML, in class-index order."""
    import yaml  # noqa: PLC0415

    names = yaml.safe_load(Path(data_yaml).read_text())["names"]
    return list(names.values()) if isinstance(names, dict) else list(names)


def split_images(data_yaml: Path, task: str) -> list[Path]:
    """The image files of split `task` of a yolov5 dataset YAML (a folder, or a .txt list of files), sorted.

    Raises:
        RuntimeError: the YAML has no such split.
    """
    import yaml  # noqa: PLC0415

    d = yaml.safe_load(Path(data_yaml).read_text())
    if task not in d:
        raise RuntimeError(f"{data_yaml} has no {task!r} split")
    root = Path(d.get("path") or Path(data_yaml).parent)
    entries = d[task] if isinstance(d[task], list) else [d[task]]
    out: list[Path] = []
    for e in entries:
        p = Path(e) if Path(e).is_absolute() else root / e
        if p.suffix == ".txt":
            out += [Path(line.strip()) for line in p.read_text().splitlines() if line.strip()]
        else:
            out += [f for f in p.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return sorted(out)


def checkpoint_from_state_dict(path: str | Path, out_dir: Path) -> str:
    """A yolov5 checkpoint (the pickle `yolov5 val` loads) rebuilt locally from a state-dict file, which is
    read with `weights_only=True`: weights fetched from a tracking server are never unpickled.

    Raises:
        ValueError: the file is not in the state-dict format (a pickle from a server is refused).
    """
    import torch  # noqa: PLC0415

    from clip_embedder.models.detector import Detector  # noqa: PLC0415

    det = Detector.load(path, allow_pickle=False)  # refuses a pickle; rebuilds DetectionModel from the dict
    out = Path(out_dir) / f"{Path(path).stem}_yolov5_{file_sha256_short(path)}.pt"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        model = det.model.float().cpu()
        model.names, model.nc = list(det.names), len(det.names)
        torch.save({"epoch": -1, "best_fitness": None, "model": model.half(), "ema": None, "updates": None,
                    "optimizer": None, "date": None}, out)
    return str(out)


def file_sha256_short(path: str | Path) -> str:
    from clip_embedder.models.detector import file_sha256  # noqa: PLC0415

    return file_sha256(path)[:12]


def subset_head_weights(weights: str, names: list[str], out_dir: Path) -> str:
    """Weights whose detection head predicts exactly `names`, cut from a checkpoint that knows them all.

    A COCO-pretrained 80-class checkpoint fine-tuned on a 7-class subset would otherwise start with a
    randomly initialised head (yolov5 transfers only tensors of equal shape). Here the head's output
    rows for box, objectness and the chosen classes are kept, so the new model starts as the
    pretrained detector restricted to those classes. Returns `weights` unchanged when the checkpoint
    already has these classes, or lacks one of them.
    """
    import copy  # noqa: PLC0415
    import hashlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt["model"]) if isinstance(ckpt, dict) else ckpt
    have = list(model.names.values()) if isinstance(model.names, dict) else list(model.names)
    if have == names or not set(names) <= set(have):
        return weights
    key = hashlib.sha256(("|".join(names) + open(weights, "rb").read(1 << 16).hex()).encode()).hexdigest()[:12]
    out = Path(out_dir) / f"{Path(weights).stem}_{len(names)}cls_{key}.pt"
    if out.is_file():
        return str(out)
    m = copy.deepcopy(model).float()
    det = m.model[-1]
    idx = [have.index(n) for n in names]
    keep = []
    for a in range(det.na):
        base = a * det.no
        keep += [base + i for i in range(5)] + [base + 5 + i for i in idx]
    keep_t = torch.tensor(keep)
    for i, conv in enumerate(det.m):
        new = torch.nn.Conv2d(conv.in_channels, len(keep), 1)
        new.weight.data = conv.weight.data[keep_t].clone()
        new.bias.data = conv.bias.data[keep_t].clone()
        det.m[i] = new
    det.nc, det.no = len(names), len(names) + 5
    m.yaml = {**m.yaml, "nc": len(names)}
    m.nc, m.names = len(names), list(names)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": -1, "best_fitness": None, "model": m.half(), "ema": None, "updates": None,
                "optimizer": None, "date": None}, out)
    return str(out)
