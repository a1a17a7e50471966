"""The text-search query set (issue "Search as people type it"): queries written from COCO128's annotations and the
nine photos, each with the images that truly match it (by annotation), in four forms — single words, short phrases,
full sentences in the style of COCO captions, and count phrases — plus queries for things absent from the index.

    python benchmarks/query_set.py            # (re)writes benchmarks/queries.json

Relevance: a query about one class matches every image annotated with it (COCO128's instances; the photos' README);
a sentence about two classes matches the images annotated with both; "two dogs" matches images with exactly two
dog instances (as a caption means it). The set is kept in the repository (`queries.json`); `bench_queries.py`
scores text search on it.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from common import SHARED

COCO = SHARED / "datasets" / "coco128"
OUT = Path(__file__).resolve().parent / "queries.json"
#: the nine photos: file → the concepts they show (the classes they hold count as annotations too)
PHOTOS = {"cat_720p.jpg": {"cat"}, "pets.jpg": {"cat", "dog"}, "hot_dog.jpg": {"hot dog"}, "owl.jpg": {"bird", "owl"},
          "parrot.jpg": {"bird", "parrot", "macaw"}, "bird.jpg": {"bird"}, "sunflower.jpg": {"sunflower", "flower"},
          "kite_and_cold.jpg": {"kite", "person"}, "grace_hopper.jpg": {"person", "tie", "military uniform"}}
PLURAL = {"person": "people", "bus": "buses", "knife": "knives", "wine glass": "wine glasses", "couch": "couches",
          "sandwich": "sandwiches", "skis": "skis", "mouse": "mice", "bench": "benches", "dining table":
          "dining tables", "sheep": "sheep", "toothbrush": "toothbrushes", "glass": "glasses"}
SPOKEN = {"person": "man", "dining table": "table", "tv": "television", "cell phone": "phone", "sports ball": "ball"}
SENTENCE_TWO = ["A {a} next to a {b}.", "There is a {a} and a {b} in this picture.", "A {a} with a {b} nearby.",
                "Someone took a picture of a {a} near a {b}."]
SENTENCE_ONE = ["A close up of a {a}.", "There is a {a} in this photo.", "An image showing a {a}."]
#: sentences written by hand for particular photos (the issue's examples among them)
HAND = {"The dog is playing with his toy in the grass": ["000000000307.jpg"],
        "A small airplane that is on a runway": ["000000000247.jpg"],
        "A colorful parrot perched on a branch": ["parrot.jpg"], "An owl looking at the camera": ["owl.jpg"],
        "A yellow flower in bloom": ["sunflower.jpg"], "A hot dog in a bun": ["hot_dog.jpg"],
        "A woman in a military uniform": ["grace_hopper.jpg"], "People flying kites on a cold day": [
            "kite_and_cold.jpg"], "A cat and a dog lying together": ["pets.jpg"]}
NEGATIVE = ["spaceship", "volcano", "submarine", "snowmobile", "violin", "penguin", "lobster", "tractor", "castle",
            "waterfall", "jellyfish", "accordion", "igloo", "lighthouse", "astronaut", "pyramid", "tiger", "dinosaur",
            "harp", "scuba diver", "a spaceship", "a red tractor", "two penguins", "a violin on a stage",
            "a castle on a hill", "a snowy mountain peak", "fireworks over a city", "a lobster on a plate",
            "a submarine under the sea", "a camel in the desert",
            "An astronaut floating in outer space.", "A volcano erupting at night.", "A tiger resting in tall grass.",
            "A jellyfish swimming in a dark aquarium.", "A man playing the accordion on the street.",
            "A lighthouse standing on a rocky coast.", "A scuba diver exploring a coral reef.",
            "Two dinosaurs in a museum hall.", "A waterfall in a green forest.", "An igloo in the snow at dusk.",
            "A harp in a concert hall.", "A kangaroo jumping across a field."]


def annotations() -> tuple[dict[str, set[str]], dict[str, Counter]]:
    """file → classes annotated in it, and file → instances per class (COCO128 and the photos)."""
    d = json.loads((COCO / "annotations" / "instances_coco128_train2017.json").read_text())
    cats = {c["id"]: c["name"] for c in d["categories"]}
    names = {im["id"]: im["file_name"] for im in d["images"]}
    counts: dict[str, Counter] = defaultdict(Counter)
    for a in d["annotations"]:
        counts[names[a["image_id"]]][cats[a["category_id"]]] += 1
    classes = {f: set(c) for f, c in counts.items()}
    for f, concepts in PHOTOS.items():
        classes[f] = set(concepts)
    return classes, counts


def fix_articles(text: str) -> str:
    """"a oven" → "an oven"."""
    import re

    return re.sub(r"\b([Aa]) (?=[aeiou])", lambda m: m.group(1) + "n ", text)


def plural(c: str) -> str:
    return PLURAL.get(c, c + "s")


def build() -> dict:
    classes, counts = annotations()
    per_class: dict[str, list[str]] = defaultdict(list)
    for f, cs in sorted(classes.items()):
        for c in cs:
            per_class[c].append(f)
    by_freq = sorted(per_class, key=lambda c: (-len(per_class[c]), c))
    queries: list[dict] = []

    def add(text: str, form: str, concept: str | None, relevant: list[str]) -> None:
        queries.append({"query": text, "form": form, "concept": concept, "relevant": sorted(relevant)})

    for c in by_freq:
        add(c, "word", c, per_class[c])
    for c in by_freq:
        article = "an" if c[0] in "aeiou" else "a"
        add(f"{article} {c}", "phrase", c, per_class[c])
    for c in by_freq[:25]:
        add(plural(c), "phrase", c, per_class[c])
        add(f"a photo of {'an' if c[0] in 'aeiou' else 'a'} {c}", "phrase", c, per_class[c])
    pairs: Counter = Counter()
    for cs in classes.values():
        s = sorted(cs)
        pairs.update((s[i], s[j]) for i in range(len(s)) for j in range(i + 1, len(s)))
    for n, ((a, b), _) in enumerate(pairs.most_common(40)):
        both = [f for f, cs in classes.items() if a in cs and b in cs]
        first, second = (b, a) if b == "person" else (a, b)  # the person leads: "A man with a handbag nearby."
        add(fix_articles(SENTENCE_TWO[n % len(SENTENCE_TWO)].format(a=SPOKEN.get(first, first),
                                                                     b=SPOKEN.get(second, second))),
            "sentence", None, both)
    for n, c in enumerate(by_freq[1:21]):
        add(fix_articles(SENTENCE_ONE[n % len(SENTENCE_ONE)].format(a=SPOKEN.get(c, c))), "sentence", c, per_class[c])
    for text, files in HAND.items():
        add(text, "sentence", None, files)
    for c in by_freq[:12]:
        many = [f for f, k in counts.items() if k[c] == 2]
        if many:
            add(f"two {plural(c)}", "count", c, many)
    # things joined by "and" (form "pair"): both annotated; "a man and a woman": at least two persons annotated
    for a, b in [pair for pair, _ in pairs.most_common(20)]:
        first, second = (b, a) if b == "person" else (a, b)
        both = [f for f, cs in classes.items() if a in cs and b in cs]
        add(fix_articles(f"a {SPOKEN.get(first, first)} and a {SPOKEN.get(second, second)}"), "pair", None, both)
    add("a man and a woman", "pair", "person", [f for f, k in counts.items() if k["person"] >= 2])
    for text in NEGATIVE:
        form = "sentence" if text.endswith(".") else "phrase" if " " in text else "word"
        add(text, form, None, [])
    return {"about": __doc__.split("\n\n")[0], "queries": queries}


def main() -> int:
    data = build()
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    forms = Counter((q["form"], bool(q["relevant"])) for q in data["queries"])
    print(f"{len(data['queries'])} queries in {OUT}: " + ", ".join(
        f"{form} {'positive' if pos else 'negative'} {n}" for (form, pos), n in sorted(forms.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
