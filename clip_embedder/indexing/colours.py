"""The colour names of an object crop, for queries such as "a red car" (the `colour` signal of text search).

Each pixel of the crop's central region (the middle half of each side: a detection box holds background at its
edges) is named by one of eleven basic colour terms (Berlin & Kay, "Basic Color Terms", 1969: black, white, gray,
red, orange, yellow, green, blue, purple, pink, brown) from its HSV value, with thresholds in the style of
HSV colour naming (e.g. Benavente et al., "Parametric fuzzy sets for automatic color naming", JOSA A 2008, made
crisp here): low value is black; low saturation is white or gray by value; otherwise the hue sector, with dark
orange/red as brown and light, weakly saturated red/purple as pink. A crop's colours are the names covering at
least `min_share` of its central pixels, at most `top` of them, the commonest first.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

#: the eleven basic colour terms, the words a query's colour is matched against
COLOUR_NAMES = ("black", "white", "gray", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
#: query words that mean one of them
COLOUR_ALIASES = {"grey": "gray", "silver": "gray", "violet": "purple", "golden": "yellow", "gold": "yellow"}
#: hue sectors, degrees: upper bound (exclusive) → name; red wraps around 360
_HUE_SECTORS = ((15, "red"), (40, "orange"), (68, "yellow"), (165, "green"), (255, "blue"), (290, "purple"),
                (335, "pink"), (361, "red"))


def pixel_names(hsv: np.ndarray) -> np.ndarray:
    """Colour name indices (into `COLOUR_NAMES`) of HSV pixels.

    Args:
        hsv: (..., 3) float: hue in degrees 0..360, saturation and value 0..1.

    Returns:
        int array of the same leading shape.
    """
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    idx = np.full(h.shape, COLOUR_NAMES.index("gray"), np.int64)
    bounds = np.array([b for b, _ in _HUE_SECTORS], np.float64)
    sector = np.searchsorted(bounds, h, side="right")
    hue_names = np.array([COLOUR_NAMES.index(n) for _, n in _HUE_SECTORS])[np.clip(sector, 0, len(bounds) - 1)]
    chromatic = (s >= 0.25) & (v >= 0.2)
    idx[chromatic] = hue_names[chromatic]
    warm = chromatic & ((h < 40) | (h >= 335))
    idx[warm & (v < 0.55) & (h < 40)] = COLOUR_NAMES.index("brown")
    idx[warm & (s < 0.5) & (v > 0.8) & ((h < 15) | (h >= 290))] = COLOUR_NAMES.index("pink")
    achromatic = ~chromatic
    idx[achromatic & (v > 0.8) & (s < 0.25)] = COLOUR_NAMES.index("white")
    idx[achromatic & (v < 0.2)] = COLOUR_NAMES.index("black")
    return idx


def crop_colours(crop: Image.Image, *, min_share: float = 0.2, top: int = 3, side: int = 48) -> list[str]:
    """The colour names of an object crop (see the module docstring).

    Args:
        crop: the object's crop, any mode. min_share: a name must cover at least this fraction of the central
            pixels. top: at most this many names. side: the central region is resized to side × side first.

    Returns:
        Names from `COLOUR_NAMES`, commonest first (possibly empty: a crop of many colours).
    """
    w, h = crop.size
    if w < 4 or h < 4:
        return []
    centre = crop.convert("RGB").crop((w // 4, h // 4, w - w // 4, h - h // 4)).resize((side, side),
                                                                                        Image.Resampling.BILINEAR)
    hsv = np.asarray(centre.convert("HSV"), np.float64) / 255.0
    hsv[..., 0] *= 360.0
    counts = np.bincount(pixel_names(hsv).ravel(), minlength=len(COLOUR_NAMES)) / float(side * side)
    order = np.argsort(-counts, kind="stable")
    return [COLOUR_NAMES[i] for i in order[:top] if counts[i] >= min_share]
