"""What the tests share besides fixtures: where the offline data and weights are, polling, free ports, the COCO
subset's files and classes, the project's script files imported as modules, and signs rendered onto photos.

Importing this needs nothing outside the repository: the unit tier uses it without `../shared`; the integration
tier's conftest refuses to start without the shared folder.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared")).resolve()
COCO128 = SHARED / "datasets" / "coco128"
ANNOTATIONS = COCO128 / "annotations" / "instances_coco128_train2017.json"
IMAGES = COCO128 / "images"
YOLO_WEIGHTS = SHARED / "models" / "yolov5" / "yolov5n.pt"
YOLO_STATE_DICT = SHARED / "models" / "yolov5" / "yolov5n_state_dict.pt"
MOBILENET = SHARED / "models" / "mobilenet" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
TAGGER_HEAD = SHARED / "models" / "mobilenet" / "mobilenet_quant_v1_224_head_layers.tflite"
IMAGENET_LABELS = SHARED / "models" / "mobilenet" / "imagenet_labels.txt"
PHOTOS = SHARED / "datasets" / "photos"

#: fonts of the Debian packages fonts-dejavu-core and fonts-nanum (scripts/install_system_packages.sh)
FONTS = {"en": Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
         "ko": Path("/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf")}


def wait_for(predicate, timeout: float = 20.0, every: float = 0.1) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subset_files(subset: Path) -> list[tuple[Path, str]]:
    """(image path, split) of every image of a built COCO subset, split by split, in file order."""
    return [(p, s) for s in ("train", "val", "test") for p in sorted((subset / s / "images").glob("*.jpg"))]


def gt_classes(subset: Path) -> dict[str, set[str]]:
    """file name → set of annotated class names (all splits of the subset)."""
    out: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        d = json.loads((subset / "annotations" / f"instances_{split}.json").read_text())
        cats = {c["id"]: c["name"] for c in d["categories"]}
        names = {im["id"]: im["file_name"] for im in d["images"]}
        for a in d["annotations"]:
            out.setdefault(names[a["image_id"]], set()).add(cats[a["category_id"]])
    return out


def load_script(path: Path) -> ModuleType:
    """A script of `scripts/` or `yolov5/` (folders of scripts, not packages) imported as the module named by its
    file stem, registered in `sys.modules` so that the scripts' imports of their siblings find it."""
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def extract_coco_subset() -> ModuleType:
    """`scripts/extract_coco_subset.py` as a module."""
    return load_script(ROOT / "scripts" / "extract_coco_subset.py")


def yolov5_script(name: str) -> ModuleType:
    """A script of `yolov5/` as a module, with the siblings it imports (mlflow_common, evaluate, promote) loaded
    first."""
    for sibling in ("mlflow_common", "evaluate", "promote"):
        load_script(ROOT / "yolov5" / f"{sibling}.py")
    return load_script(ROOT / "yolov5" / f"{name}.py")


def render_sign(src: Path, text: str, dest: Path, font: Path) -> None:
    """Write `text` in black on a white band onto a copy of a photo (a sign or caption in the picture), JPEG at
    quality 90. Used by the OCR tests and `benchmarks/quality_words.py`."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415

    im = Image.open(src).convert("RGB")
    f = ImageFont.truetype(str(font), 44)
    draw = ImageDraw.Draw(im)
    _, _, right, bottom = draw.textbbox((0, 0), text, font=f)
    draw.rectangle((20, 20, 40 + right, 40 + bottom), fill="white")
    draw.text((30, 30), text, font=f, fill="black")
    im.save(dest, quality=90)
