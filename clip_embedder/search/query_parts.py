"""What a query holds beyond what is embedded: the parts of an image query that are searched (its crops), and the
words of a text query an embedding does not check (counts, colours), checked on the detected objects."""
from __future__ import annotations

from collections import Counter
from typing import Any

from PIL import Image

from clip_embedder.db.items import ItemRepository
from clip_embedder.indexing.colours import COLOUR_ALIASES
from clip_embedder.indexing.crops import CropPolicy
from clip_embedder.indexing.describe import describe_detections, describe_object
from clip_embedder.models.tagger import COCO_SYNONYMS
from clip_embedder.search.text import (
    COLOUR,
    COUNT,
    ParsedQuery,
    colour_pairs,
    conjunction_parts,
    unused_colours,
)


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
                       confident: set[int], warnings: list[str], shown: dict[int, int]) -> set[int]:
    """What an embedding does not check, checked or said: a count of a detected class ("two dogs": the images in which
    exactly that many were detected, the `count` signal) and a colour of one ("a red car": the images with a car whose
    crop is red, the `colour` signal) become the confident images, added to `ranked`; `shown` gets, per image, the
    coloured object a hit shows. A colour word naming no detected class is said to be unchecked.

    Returns:
        The confident images (`confident` itself when the query counts and colours nothing checkable).
    """
    colours = unused_colours(parsed.rest)
    things = conjunction_parts(parsed.rest) if parsed.counted is None else None
    labels = set(items.labels()) if parsed.counted or colours or things else set()
    pairs = colour_pairs(parsed.rest, labels)
    paired = {c for c, _ in pairs}
    loose = [c for c in colours if COLOUR_ALIASES.get(c, c) not in paired]
    if loose:
        warnings.append(f"colours are checked on detected objects only, and {', '.join(repr(c) for c in loose)} "
                        "names none of the detector's classes here: it only steered the text embedding")
    checked: list[set[int]] = []
    if pairs:
        found = [items.colour_items(label, colour) for colour, label in pairs]
        match = set.intersection(*(set(f) for f in found))
        ranked[COLOUR] = [(img, 1.0) for img in sorted(match, key=lambda i: -i)]
        shown.update({img: found[0][img] for img in match})
        if not match:
            warnings.append("no detected " + " and ".join(f"{label} is {colour}" for colour, label in pairs))
        checked.append(match)
    need = _together(things, labels) if things else None
    if need is not None:
        together = _detected(items, need, exact=False)
        if not together:
            named = " and ".join(f"{n} {lab!r}" for lab, n in need.items())
            warnings.append(f"no photo has {named} detected together")
        ranked[COUNT] = [(img, 1.0) for img in sorted(together, key=lambda i: -i)]
        checked.append(together)
    if parsed.counted is not None:
        n, thing = parsed.counted
        if thing not in labels:
            warnings.append(f"counts are checked on detected objects, and no object in this index is a {thing!r}: "
                            "the count was not checked")
        else:
            exact = _detected(items, Counter({thing: n}), exact=True)
            if not exact:
                some = len(items.label_counts(thing))
                warnings.append(f"no photo has exactly {n} {thing!r} detected ({some} have at least one)")
            ranked[COUNT] = [(img, 1.0) for img in sorted(exact, key=lambda i: -i)]
            checked.append(exact)
    return set.intersection(*checked) if checked else confident


def _detected(items: ItemRepository, need: Counter, *, exact: bool) -> set[int]:
    """The images in which each label of `need` was detected exactly (`exact`) or at least as often as it says."""
    per = {lab: items.label_counts(lab) for lab in need}
    return {img for img in set.intersection(*(set(p) for p in per.values()))
            if all(per[lab][img] == n if exact else per[lab][img] >= n for lab, n in need.items())}


def _together(things: list[str], labels: set[str]) -> Counter | None:
    """How often each detector label is named by the things a query joins ("a man and a woman" → person: 2, "a cat
    and a dog" → cat: 1, dog: 1): the images must show them together, at least that often (`_detected`). None when
    a thing is not a label the index has, by itself or as one of its everyday synonyms (`COCO_SYNONYMS`)."""
    label_of = {lab: lab for lab in labels} | {w: lab for lab in labels for w in COCO_SYNONYMS.get(lab, "").split()
                                               if w not in labels}
    if not all(t in label_of for t in things):
        return None
    return Counter(label_of[t] for t in things)
