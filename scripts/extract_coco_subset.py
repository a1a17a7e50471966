#!/usr/bin/env python
"""Build a versioned COCO subset: chosen classes, deterministic train/val/test splits, YOLO labels,
per-split COCO JSON, a dataset YAML for yolov5 and a manifest.

Output: `<output>/version_N/`
    train|val|test/images/*.jpg       the images (hard links where possible, else copies)
    train|val|test/labels/*.txt       YOLO labels `cls xc yc w h` (normalised; crowd boxes left out)
    annotations/instances_<split>.json  COCO instances of the chosen classes per split
    coco_subset.yaml                  dataset YAML that yolov5 accepts (train/val/test, nc, names)
    manifest.json                     source, sha256 of every input, config, per-split per-class counts

The same inputs and config give the same version (nothing is rewritten); a different config gives
the next version. A version is written to a temporary folder and renamed into place at the end,
so a crash leaves no half-written version.

Sources (flags or the COCO_ANNOTATIONS / COCO_IMAGES settings):
  annotations: an instances JSON, a zip holding it (e.g. annotations_trainval2017.zip), or a URL
               (default: the official annotations_trainval2017.zip; downloaded once into the cache)
  images:      a folder, a zip, or a URL prefix (default: the official train2017 images, fetched
               one by one for the selected images only)

Examples:
  python scripts/extract_coco_subset.py                                   # official sources
  python scripts/extract_coco_subset.py --annotations path/instances_train2017.json --images path/train2017
  python scripts/extract_coco_subset.py --classes person car --ratios 0.8 0.1 0.1 --seed 1
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

DEFAULT_CLASSES = ["person", "car", "cell phone", "laptop", "book", "handbag", "sports ball"]
OFFICIAL_ANNOTATIONS = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
OFFICIAL_IMAGES = "http://images.cocodataset.org/train2017/"
ZIP_MEMBER = "annotations/instances_train2017.json"
SPLITS = ("train", "val", "test")


class SubsetError(Exception):
    """A problem with the inputs; the message says what to fix."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def download(url: str, dest: Path) -> Path:
    """Download `url` to `dest` once (atomic: temp file then rename), with a progress bar."""
    if dest.exists():
        return dest
    from tqdm.auto import tqdm  # noqa: PLC0415

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f, tqdm(
                total=int(r.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                desc=f"download {dest.name}", leave=False) as bar:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SubsetError(f"cannot download {url}: {e}. Without a network, pass a local copy "
                          "(--annotations / --images or COCO_ANNOTATIONS / COCO_IMAGES).") from e
    os.replace(tmp, dest)
    return dest


def load_annotations(source: str, cache: Path, member: str) -> tuple[dict, Path]:
    """Load a COCO instances JSON from a file, a zip or a URL. Returns (data, local file)."""
    if _is_url(source):
        source = str(download(source, cache / Path(source).name))
    path = Path(source)
    if not path.exists():
        raise SubsetError(f"annotation file {path} does not exist")
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if member not in names:
                candidates = [n for n in names if n.endswith(".json") and "instances" in n]
                raise SubsetError(f"{path} has no {member}; it holds {candidates[:10]} "
                                  "(choose with --annotation-member)")
            out = cache / Path(member).name
            if not out.exists():
                cache.mkdir(parents=True, exist_ok=True)
                with z.open(member) as src, open(out.with_suffix(".part"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(out.with_suffix(".part"), out)
            path = out
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SubsetError(f"{path} is not valid JSON: {e}") from e
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise SubsetError(f"{path} is not a COCO instances file: missing keys {missing}")
    return data, path


class ImageSource:
    """Where image files come from: a folder, a zip, or a URL prefix (downloads cached)."""

    def __init__(self, source: str, cache: Path):
        self.source, self.cache = source, cache
        self.zip = None
        if not _is_url(source):
            p = Path(source)
            if not p.exists():
                raise SubsetError(f"image source {p} does not exist")
            if p.suffix == ".zip":
                self.zip = zipfile.ZipFile(p)
                self.members = {Path(n).name: n for n in self.zip.namelist() if not n.endswith("/")}

    def local(self, file_name: str) -> Path | None:
        """A local path of `file_name`, fetching or extracting it into the cache; None when absent."""
        if _is_url(self.source):
            dest = self.cache / "images" / file_name
            try:
                return download(self.source.rstrip("/") + "/" + file_name, dest)
            except SubsetError:
                return None
        if self.zip is not None:
            member = self.members.get(file_name)
            if member is None:
                return None
            dest = self.cache / "images" / file_name
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                with self.zip.open(member) as src, open(dest.with_suffix(".part"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(dest.with_suffix(".part"), dest)
            return dest
        p = Path(self.source) / file_name
        return p if p.is_file() else None


def resolve_classes(data: dict, names: list[str]) -> list[dict]:
    """The COCO categories for `names`, in that order. Raises SubsetError naming unknown names."""
    by_name = {c["name"]: c for c in data["categories"]}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        hints = {n: difflib.get_close_matches(n, list(by_name), n=3) for n in unknown}
        raise SubsetError("unknown class name(s): " + ", ".join(
            f"{n!r}" + (f" (did you mean {', '.join(map(repr, h))}?)" if h else "") for n, h in hints.items()))
    if len(set(names)) != len(names):
        raise SubsetError(f"duplicate class names in {names}")
    return [by_name[n] for n in names]


def split_ids(ids: list[int], ratios: tuple[float, float, float], seed: int) -> dict[str, list[int]]:
    """Deterministic split: sort ids, shuffle with `random.Random(seed)`, cut by ratios (test gets the rest)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_train = int(round(n * ratios[0]))
    n_val = int(round(n * ratios[1]))
    return {"train": sorted(order[:n_train]), "val": sorted(order[n_train:n_train + n_val]),
            "test": sorted(order[n_train + n_val:])}


def yolo_line(cls: int, bbox: list[float], w: int, h: int) -> str:
    """`cls xc yc bw bh` normalised to [0, 1] from a COCO `[x, y, w, h]` pixel box."""
    x, y, bw, bh = bbox
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(w), x + bw), min(float(h), y + bh)
    return f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


def find_version(output: Path, fingerprint: str) -> Path | None:
    for manifest in sorted(output.glob("version_*/manifest.json")):
        try:
            if json.loads(manifest.read_text()).get("fingerprint") == fingerprint:
                return manifest.parent
        except (OSError, json.JSONDecodeError):
            continue
    return None


def next_version(output: Path) -> int:
    nums = [int(p.name.split("_")[1]) for p in output.glob("version_*") if p.name.split("_")[1].isdigit()]
    return max(nums, default=0) + 1


def build(annotations: str, images: str, output: Path, classes: list[str], ratios: tuple[float, float, float],
          seed: int, max_images: int | None, cache: Path, member: str = ZIP_MEMBER, progress: bool = True) -> Path:
    """Build (or find) the subset version for these inputs and config; returns its folder.

    Raises:
        SubsetError: bad JSON, unknown classes, bad ratios, missing images (all named).
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise SubsetError(f"--ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
    data, ann_path = load_annotations(annotations, cache, member)
    cats = resolve_classes(data, classes)
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    images_by_id = {im["id"]: im for im in data["images"]}
    anns_by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if a["category_id"] in cat_index:
            anns_by_image.setdefault(a["image_id"], []).append(a)
    selected = sorted(i for i, anns in anns_by_image.items() if any(not a.get("iscrowd", 0) for a in anns))
    if not selected:
        raise SubsetError(f"no image in {ann_path} has a (non-crowd) box of {classes}")
    if max_images and len(selected) > max_images:
        rnd = list(selected)
        random.Random(seed).shuffle(rnd)
        selected = sorted(rnd[:max_images])
    splits = split_ids(selected, ratios, seed)

    src = ImageSource(images, cache)
    local: dict[int, Path] = {}
    missing: list[str] = []
    for i in tqdm(selected, desc="locating images", unit="img", disable=not progress, leave=False):
        p = src.local(images_by_id[i]["file_name"])
        if p is None:
            missing.append(images_by_id[i]["file_name"])
        else:
            local[i] = p
    if missing:
        raise SubsetError(f"{len(missing)} selected image(s) not found in {images}: {', '.join(missing[:10])}"
                          + (" …" if len(missing) > 10 else ""))
    image_sha = {i: sha256_file(local[i]) for i in tqdm(selected, desc="hashing", unit="img", disable=not progress,
                                                          leave=False)}
    config = {"classes": classes, "ratios": list(ratios), "seed": seed, "max_images": max_images}
    ann_sha = sha256_file(ann_path)
    fingerprint = hashlib.sha256(json.dumps(
        {"annotations_sha256": ann_sha, "images": {str(i): image_sha[i] for i in selected}, "config": config},
        sort_keys=True).encode()).hexdigest()
    output.mkdir(parents=True, exist_ok=True)
    existing = find_version(output, fingerprint)
    if existing is not None:
        print(f"up to date: {existing} already holds this subset (fingerprint {fingerprint[:12]})")
        return existing

    version = next_version(output)
    final = output / f"version_{version}"
    tmp = Path(tempfile.mkdtemp(prefix=f".version_{version}.", dir=output))
    try:
        counts: dict[str, dict] = {}
        file_list: dict[str, list[dict]] = {}
        (tmp / "annotations").mkdir()
        for split, ids in splits.items():
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "labels").mkdir(parents=True)
            per_class = {c["name"]: 0 for c in cats}
            boxes = crowd = 0
            split_anns = []
            for i in tqdm(ids, desc=f"writing {split}", unit="img", disable=not progress, leave=False):
                im = images_by_id[i]
                dest = tmp / split / "images" / im["file_name"]
                try:
                    os.link(local[i], dest)
                except OSError:
                    shutil.copy2(local[i], dest)
                lines = []
                for a in anns_by_image[i]:
                    split_anns.append(a)
                    if a.get("iscrowd", 0):
                        crowd += 1
                        continue
                    lines.append(yolo_line(cat_index[a["category_id"]], a["bbox"], im["width"], im["height"]))
                    per_class[next(c["name"] for c in cats if c["id"] == a["category_id"])] += 1
                    boxes += 1
                (tmp / split / "labels" / (Path(im["file_name"]).stem + ".txt")).write_text(
                    "\n".join(lines) + ("\n" if lines else ""))
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps({
                "info": {**data.get("info", {}), "description": f"COCO subset version_{version} {split}"},
                "licenses": data.get("licenses", []),
                "images": [images_by_id[i] for i in ids], "annotations": split_anns, "categories": cats}))
            counts[split] = {"images": len(ids), "boxes": boxes, "crowd_boxes_excluded": crowd, "per_class": per_class}
            file_list[split] = [{"file": images_by_id[i]["file_name"], "coco_id": i, "sha256": image_sha[i]}
                                for i in ids]
        (tmp / "coco_subset.yaml").write_text(
            "# generated by scripts/extract_coco_subset.py\n"
            f"path: {final.resolve()}\ntrain: train/images\nval: val/images\ntest: test/images\n"
            f"nc: {len(cats)}\nnames: {json.dumps([c['name'] for c in cats])}\n")
        manifest = {
            "version": version, "fingerprint": fingerprint,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"annotations": annotations, "annotations_file": str(ann_path), "annotations_sha256": ann_sha,
                       "images": images},
            "config": config, "categories": cats, "counts": counts, "files": file_list,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/extract_coco_subset.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotations", default=os.environ.get("COCO_ANNOTATIONS") or OFFICIAL_ANNOTATIONS,
                   help="instances JSON, zip or URL (default: COCO_ANNOTATIONS or the official zip)")
    p.add_argument("--annotation-member", default=ZIP_MEMBER, help=f"JSON inside a zip (default: {ZIP_MEMBER})")
    p.add_argument("--images", default=os.environ.get("COCO_IMAGES") or OFFICIAL_IMAGES,
                   help="image folder, zip or URL prefix (default: COCO_IMAGES or the official train2017 URL)")
    p.add_argument("--output", type=Path, default=Path("datasets/coco_subset"), help="where version_N/ folders go")
    p.add_argument("--classes", nargs="+", default=DEFAULT_CLASSES, help="COCO class names (quote multi-word names)")
    p.add_argument("--ratios", nargs=3, type=float, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--max-images", type=int, default=None,
                   help="cap on selected images (sensible with the official URL: e.g. 2000)")
    p.add_argument("--cache", type=Path, default=Path("datasets/downloads"), help="download / extraction cache")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if _is_url(args.images) and not args.max_images:
        args.max_images = 2000
        print("note: images come from the official URL; capping the subset at --max-images 2000", file=sys.stderr)
    try:
        out = build(args.annotations, args.images, args.output, args.classes, tuple(args.ratios), args.seed,
                    args.max_images, args.cache, args.annotation_member, progress=not args.no_progress)
    except SubsetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = json.loads((out / "manifest.json").read_text())
    print(f"{out}: " + ", ".join(f"{s} {c['images']} images / {c['boxes']} boxes" for s, c in m["counts"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
