"""Crop policy: pad each detected box, drop crops that are too small or too elongated."""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class CropPolicy:
    """How a detection becomes a crop.

    Attributes:
        padding: padding added on each side, as a fraction of the box's width (left/right) and
            height (top/bottom); 0.1 adds 10 %. Clipped to the image.
        min_side: a crop whose shorter side (pixels, after padding) is below this is dropped.
        max_aspect: a crop whose longer/shorter side ratio is above this is dropped.
    """

    padding: float = 0.1
    min_side: int = 24
    max_aspect: float = 4.0

    def crop_box(self, bbox: tuple[float, float, float, float], width: int, height: int
                 ) -> tuple[int, int, int, int] | None:
        """The padded integer crop box (xyxy pixels) for `bbox`, or None when the policy drops it.

        Args:
            bbox: (x1, y1, x2, y2) in pixels of an image `width` x `height`.
        """
        x1, y1, x2, y2 = bbox
        bw, bh = max(0.0, x2 - x1), max(0.0, y2 - y1)
        px, py = bw * self.padding, bh * self.padding
        cx1, cy1 = max(0, int(round(x1 - px))), max(0, int(round(y1 - py)))
        cx2, cy2 = min(width, int(round(x2 + px))), min(height, int(round(y2 + py)))
        w, h = cx2 - cx1, cy2 - cy1
        if min(w, h) < self.min_side:
            return None
        if max(w, h) / max(1, min(w, h)) > self.max_aspect:
            return None
        return cx1, cy1, cx2, cy2

    def crop(self, image: Image.Image, bbox: tuple[float, float, float, float]) -> Image.Image | None:
        """The padded crop of `image` around `bbox`, or None when the policy drops it."""
        box = self.crop_box(bbox, *image.size)
        return None if box is None else image.crop(box)
