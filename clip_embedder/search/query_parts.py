"""What a query holds beyond what is embedded: the parts of an image query that are searched (its crops), and the
words of a text query an embedding does not check (counts, colours)."""
from __future__ import annotations

from typing import Any

from PIL import Image

from clip_embedder.db.items import ItemRepository
from clip_embedder.indexing.crops import CropPolicy
from clip_embedder.indexing.describe import describe_detections, describe_object
from clip_embedder.search.text import COUNT, ParsedQuery, unused_colours


def query_crops(image: Image.Image, dets: list[Any], policy: CropPolicy, min_fraction: float
                ) -> tuple[list[Image.Image], list[str], list[int], dict[int, str]]:
    """What an image query searches: the whole image, then each detection whose crop the crop policy keeps and whose
    shorter side is at least `min_fraction` (QUERY_MIN_OBJECT_FRACTION) of the photo's shorter side.

    Args:
        image: the RGB query. dets: its detections (`.bbox` xyxy pixels, `.label`).

    Returns:
        (crops, their descriptions (the whole image's first), the detection index of each object crop, detection
        index → why it was skipped).
    """
    w, h = image.size
    crops, descs, idx, skipped = [image], [describe_detections([d.label for d in dets])], [], {}
    for i, d in enumerate(dets):
        box = policy.crop_box(d.bbox, w, h)
        if box is None:
            skipped[i] = "crop too small or too elongated for the crop policy (CROP_MIN_SIDE, CROP_MAX_ASPECT)"
            continue
        bw, bh = box[2] - box[0], box[3] - box[1]
        if min(bw, bh) < min_fraction * min(w, h):
            skipped[i] = (f"{bw}×{bh} px: under {min_fraction:.0%} of the photo's shorter side "
                          "(QUERY_MIN_OBJECT_FRACTION)")
            continue
        crops.append(image.crop(box))
        descs.append(describe_object(d.label))
        idx.append(i)
    return crops, descs, idx, skipped


def words_not_embedded(items: ItemRepository, parsed: ParsedQuery, ranked: dict[str, list[tuple[int, float]]],
                       confident: set[int], warnings: list[str]) -> set[int]:
    """What an embedding does not check, checked or said: a count of a detected class ("two dogs": the images in which
    exactly that many were detected become the confident ones, added to `ranked` as the `count` signal); colour words
    (the index keeps no colour: a warning says they were not checked).

    Returns:
        The confident images (`confident` itself when the query counts nothing).
    """
    colours = unused_colours(parsed.rest)
    if colours:
        warnings.append(f"colour is not indexed: {', '.join(repr(c) for c in colours)} only steered the text "
                        "embedding; the results are not checked for it")
    if parsed.counted is None:
        return confident
    n, thing = parsed.counted
    if thing not in items.labels():
        warnings.append(f"counts are checked on detected objects, and no object in this index is a {thing!r}: "
                        "the count was not checked")
        return confident
    per_image = items.label_counts(thing)
    exact = {img for img, c in per_image.items() if c == n}
    ranked[COUNT] = [(img, 1.0) for img in sorted(exact, key=lambda i: -i)]
    if not exact:
        warnings.append(f"no photo has exactly {n} {thing!r} detected ({len(per_image)} have at least one)")
    return exact
