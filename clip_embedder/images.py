"""Safe image decoding: size caps, pixel caps and truncated files give a clear `ImageError`."""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class ImageError(ValueError):
    """An input that is not a usable image. `status` is the HTTP status an API should answer."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data` (64 lowercase hex characters)."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, name: str = "image",
                 settings: tuple[str, str] = ("MAX_UPLOAD_BYTES", "MAX_IMAGE_PIXELS")) -> Image.Image:
    """Decode bytes into an RGB PIL image, EXIF orientation applied.

    Args:
        data: the encoded file (JPEG, PNG, WebP, BMP, TIFF).
        max_bytes: size cap; larger input raises `ImageError` (status 413).
        max_pixels: cap on width*height, checked from the header before the pixels are decoded
            (a decompression bomb never reaches memory); larger raises `ImageError` (413).
        name: how the input is named in error messages.
        settings: the names of the byte and pixel caps, for error messages.

    Returns:
        A fully loaded `PIL.Image.Image` in mode "RGB".

    Raises:
        ImageError: empty, too large, not an image (415), truncated or corrupt (422).
    """
    if not data:
        raise ImageError(f"{name} is empty", 422)
    bytes_setting, pixels_setting = settings
    if len(data) > max_bytes:
        raise ImageError(f"{name} is {len(data):,} bytes; the limit is {max_bytes:,} ({bytes_setting})", 413)
    try:
        with warnings.catch_warnings():
            # our own cap below is checked from the header, before any pixel is decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{name} is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,} ({pixels_setting})", 413)
            img.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's hard stop at 2 x Image.MAX_IMAGE_PIXELS
        raise ImageError(f"{name} is too large to decode safely ({pixels_setting} cannot exceed Pillow's "
                         f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,}-pixel limit): {e}", 413) from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(f"{name} is not an image format this service reads (JPEG, PNG, WebP, BMP, TIFF)", 415) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name} is truncated or corrupt: {e}", 422) from e
    return ImageOps.exif_transpose(img).convert("RGB")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_image_file(path: str | Path, *, max_bytes: int, max_pixels: int) -> tuple[Image.Image, str]:
    """Read and decode an image file; returns `(RGB image, sha256 of the file bytes)`.

    Raises:
        ImageError: as `decode_image`, naming the file.
        FileNotFoundError: the file does not exist.
    """
    data = Path(path).read_bytes()
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels, name=str(path)), sha256_bytes(data)


def list_images(root: str | Path) -> list[Path]:
    """All image files under `root` (recursive), sorted by path. Raises `FileNotFoundError`."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
