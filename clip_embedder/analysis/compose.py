"""From what the local analysers found to what a person reads: the description sentence and the sensitive verdict.

Both are pure functions of typed findings (`Findings`), so they are tested without models.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from clip_embedder.analysis.faces import Face
from clip_embedder.analysis.nudity import NudityResult
from clip_embedder.analysis.personal_data import PersonalDataFinding
from clip_embedder.analysis.records import Reason, Sensitive
from clip_embedder.models.detector import Detection
from clip_embedder.models.ocr import OcrLine
from clip_embedder.models.tagger import Tag

NUMBER_WORDS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
IRREGULAR_PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis",
                     "scissors": "scissors", "child": "children", "man": "men", "woman": "women"}
#: characters of text read in the photo quoted in a description
QUOTE_CHARS = 80
#: a face whose shorter side is under this many pixels is not identifiable (face recognisers work on 112 px crops,
#: ArcFace / InsightFace; at 32 px little identity is left) — it is still a label, but no reason for the verdict
IDENTIFIABLE_FACE_PX = 32


@dataclass
class Findings:
    """Everything the local analysers found in one image (a field stays empty when its analyser did not run)."""

    width: int
    height: int
    detections: list[Detection] = field(default_factory=list)
    tags: list[Tag] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    lines: list[OcrLine] = field(default_factory=list)
    personal_data: list[PersonalDataFinding] = field(default_factory=list)
    nudity: NudityResult | None = None


def plural(noun: str) -> str:
    """The plural of a COCO class or an ImageNet label ("person" → "people", "bus" → "buses", "wine glass" →
    "wine glasses"); the last word of a phrase is the one inflected."""
    head, _, last = noun.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        word = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "sh", "ch", "x", "z")):
        word = last + "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def counted(noun: str, n: int) -> str:
    """"a dog", "an apple", "two people", "12 cars"."""
    if n == 1:
        return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun
    return f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} {plural(noun)}"


def joined(parts: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _key(label: str) -> str:
    return "".join(ch for ch in label.lower() if ch.isalnum())


def distinct_objects(detections: list[Detection], inside: float = 0.9) -> list[Detection]:
    """The detections a sentence should count: one lying mostly (`inside` of its area) within a surer detection of
    the same label is a part of it, not another object (a "person" on a medal of a person's uniform)."""
    def area(b: tuple[float, float, float, float]) -> float:
        return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])

    def overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
        return area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))

    ranked = sorted(detections, key=lambda d: -d.score)
    return [d for i, d in enumerate(ranked)
            if not any(o.label == d.label and overlap(d.bbox, o.bbox) >= inside * max(area(d.bbox), 1e-9)
                       for o in ranked[:i])]


def describe(f: Findings) -> str:
    """One sentence about the photo from its objects, ImageNet tags, faces and the text read, e.g. "Two people and a
    dog; it looks like a seashore; one face is visible; the text reads 'EXIT'." ("A photo with nothing recognised."
    when nothing was found). An ImageNet tag naming a detected object ("hotdog" for "hot dog") is not repeated, and
    an object inside a surer one of its kind is not counted (`distinct_objects`)."""
    counts: dict[str, int] = {}
    for d in distinct_objects(f.detections):
        counts[d.label] = counts.get(d.label, 0) + 1
    objects = [counted(k, n) for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    seen = {_key(k) for k in counts}
    tags = [t.label for t in f.tags if _key(t.label) not in seen][:2]
    if objects:
        sentence = joined(objects)
        if tags:
            sentence += "; it looks like " + joined([counted(t, 1) for t in tags])
    elif tags:
        sentence = "a photo of " + joined([counted(t, 1) for t in tags])
    else:
        sentence = "a photo with text" if f.lines else "a photo with nothing recognised"
    clauses = [sentence]
    if f.faces:
        n = len(f.faces)
        clauses.append(f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} face{'s are' if n > 1 else ' is'} visible"
                       .replace("a face is", "one face is"))
    text = " ".join(" ".join(ln.text for ln in f.lines).split())
    if text:
        quoted = text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS].rsplit(" ", 1)[0] + "…"
        clauses.append(f"the text reads '{quoted}'")
    out = "; ".join(clauses)
    return out[:1].upper() + out[1:] + "."


def face_reasons(faces: list[Face], min_side: float = IDENTIFIABLE_FACE_PX) -> list[Reason]:
    """One `face` reason per identifiable face (shorter side at least `min_side` px)."""
    return [Reason(category="face", score=face.score, bbox_xyxy=face.bbox,
                   evidence=f"an identifiable face ({face.bbox[2] - face.bbox[0]:.0f}×{face.bbox[3] - face.bbox[1]:.0f}"
                            f" px, face detector score {face.score:.2f})")
            for face in faces if face.min_side >= min_side]


def verdict(f: Findings, *, face_min_side: float = IDENTIFIABLE_FACE_PX) -> Sensitive:
    """Sensitive when an identifiable face, personal data in the text read, or nudity above its floor is found; each
    reason carries its evidence and box (personal data: the OCR line's box, its value masked)."""
    reasons = face_reasons(f.faces, face_min_side)
    reasons += [Reason(category="personal_data", score=p.score, bbox_xyxy=p.bbox,
                       evidence=f"a {p.describe} in the text read: '{p.masked}'") for p in f.personal_data]
    if f.nudity is not None:
        if f.nudity.score is not None and f.nudity.score >= f.nudity.floor:
            reasons.append(Reason(category="nudity", score=f.nudity.score, evidence=(
                f"open_nsfw scores the photo {f.nudity.score:.2f} (floor {f.nudity.floor:g})")))
        reasons += [Reason(category="nudity", score=r.score, bbox_xyxy=r.bbox,
                           evidence=f"NudeNet: {r.label.lower().replace('_', ' ')} ({r.score:.2f})")
                    for r in f.nudity.regions]
    reasons.sort(key=lambda r: -r.score)
    return Sensitive(verdict=bool(reasons), score=max((r.score for r in reasons), default=0.0), reasons=reasons)
