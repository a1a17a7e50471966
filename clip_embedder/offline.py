"""Switch off every network access the third-party stack would do at import or run time.

Import this module before `yolov5`, `ultralytics`, `open_clip`, `huggingface_hub` or
`sentence_transformers`. It only sets defaults: a variable the user set explicitly wins.

- `YOLO_OFFLINE=1`: the `ultralytics` package (a dependency of `yolov5`) otherwise does DNS
  look-ups at import and tries pip auto-installs.
- `YOLOV5_CONFIG_DIR` / `YOLO_CONFIG_DIR` / `MPLCONFIGDIR`: settings stay in the project cache, and
  yolov5's plots find `Arial.ttf` there (copied from matplotlib's bundled DejaVu Sans) instead of
  downloading it.
- `HF_HUB_OFFLINE=1` / `TRANSFORMERS_OFFLINE=1` unless `ALLOW_DOWNLOADS` is true.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

CACHE_DIR = Path(os.environ.get("CLIP_EMBEDDER_CACHE", Path.home() / ".cache" / "clip_embedder"))


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


from PIL import Image as _PILImage  # noqa: E402  (after the environment above is set)

#: Pillow's own `Image.open`, captured before `ultralytics` (imported by `yolov5`) replaces it with a
#: wrapper that pip-installs `pi-heif` on an unidentified image, i.e. a network access on bad input.
PIL_OPEN = _PILImage.open


def _pillow_font_getsize() -> None:
    """yolov5 7.0.14's plots call `FreeTypeFont.getsize`, removed in Pillow 10; restore it from `getbbox`."""
    from PIL import ImageFont  # noqa: PLC0415

    if not hasattr(ImageFont.FreeTypeFont, "getsize"):
        def getsize(self, text, *args, **kwargs):
            left, top, right, bottom = self.getbbox(text, *args, **kwargs)
            return right - left, bottom - top

        ImageFont.FreeTypeFont.getsize = getsize  # type: ignore[attr-defined]


def import_yolov5() -> None:
    """Import the yolov5 modules this project uses, then undo ultralytics' `PIL.Image.open` patch."""
    import yolov5.models.yolo  # noqa: F401, PLC0415
    import yolov5.utils.general  # noqa: F401, PLC0415

    _PILImage.open = PIL_OPEN
    _pillow_font_getsize()
    for name in ("yolov5", "ultralytics"):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure() -> None:
    """Set the offline environment (idempotent)."""
    cfg = CACHE_DIR / "yolo"
    cfg.mkdir(parents=True, exist_ok=True)
    for key, value in {
        "YOLO_OFFLINE": "1",
        "YOLOV5_CONFIG_DIR": str(cfg),
        "YOLO_CONFIG_DIR": str(cfg),
        "MPLCONFIGDIR": str(cfg / "matplotlib"),
        "YOLO_VERBOSE": "False",
        "TOKENIZERS_PARALLELISM": "false",
        "GIT_PYTHON_REFRESH": "quiet",
    }.items():
        os.environ.setdefault(key, value)
    if not _truthy(os.environ.get("ALLOW_DOWNLOADS")):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    font = Path(os.environ["YOLOV5_CONFIG_DIR"]) / "Arial.ttf"
    if not font.exists():
        try:
            import matplotlib

            src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
            shutil.copyfile(src, font)
        except Exception:  # plotting only; inference never needs the font
            pass
    for name in ("yolov5", "ultralytics"):
        logging.getLogger(name).setLevel(logging.WARNING)


configure()
