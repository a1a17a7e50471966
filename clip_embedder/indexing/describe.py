"""Descriptions: the text an item is embedded by in the `text` space and shown as, built from its label, its
ImageNet tags and (for a whole image) the text read in it."""
from __future__ import annotations


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def describe_object(label: str, tags: list[str] | tuple[str, ...] = ()) -> str:
    """The text description of one detected object and its ImageNet tags, e.g. "a photo of a dog (Labrador
    retriever)"; a tag equal to the label is not repeated."""
    base = f"a photo of {_article(label)} {label}"
    extra = [t for t in dict.fromkeys(tags) if t.lower() != label.lower()]
    return f"{base} ({', '.join(extra)})" if extra else base


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_detections(labels: list[str]) -> str:
    """The text description of an image from its detected labels, e.g. "a photo of 2 persons and a car".

    Labels are counted and listed by descending count; an image with none gets
    "a photo with no detected objects".
    """
    if not labels:
        return "a photo with no detected objects"
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    parts = [f"{_article(k)} {k}" if n == 1 else f"{n} {k}s"
             for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "a photo of " + _and(parts)


#: characters of OCR text carried into a description (the text model reads 256 tokens at most)
DESCRIPTION_TEXT_CHARS = 200


def describe_image(labels: list[str], tags: list[str] | tuple[str, ...] = (), text: str = "") -> str:
    """The description of a whole image: its detected objects, its ImageNet tags and the text read in it,
    e.g. "a photo of 2 persons and a dog (Labrador retriever); text: 'EXIT'", or "a photo of a zebra" for
    an image with no detections tagged `zebra`."""
    tags = list(dict.fromkeys(tags))
    if labels:
        desc = describe_detections(labels)
        extra = [t for t in tags if t.lower() not in {x.lower() for x in labels}]
        if extra:
            desc += f" ({', '.join(extra)})"
    elif tags:
        desc = "a photo of " + _and([f"{_article(t)} {t}" for t in tags])
    else:
        desc = describe_detections([])
    text = " ".join(text.split())[:DESCRIPTION_TEXT_CHARS]
    return f"{desc}; text: '{text}'" if text else desc
