"""Text search as steps, each a function over typed records (the service wires them, `SearchService.search_text`):

1. `parse_query`: the text → `ParsedQuery` (quoted phrases that must appear in a photo's OCR text, the rest).
2. candidates per signal: each embedding space's nearest items and the lexical matches, reduced to one entry per
   image by `rank_images` (→ `ImageRanking`); quoted phrases add `phrase_ranking`.
3. fuse: reciprocal rank fusion of the per-signal lists (`clip_embedder.search.fusion.rrf_fuse`).
4. decide: `decide` keeps the images with confident evidence (a lexical match on a label, a sure tag or OCR text,
   or a similarity at or above its space's relevance floor), hides or flags the others (`Decision`).
5. hits: `best_items` says which item of each chosen image the hit shows.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from clip_embedder.indexing.colours import COLOUR_ALIASES, COLOUR_NAMES
from clip_embedder.search.fusion import rrf_fuse
from clip_embedder.search.records import QueryError

#: the pseudo-spaces of text search besides the embedding spaces: full-text over keywords, OCR phrase match, counts
LEXICAL = "lexical"
OCR_PHRASE = "ocr"
#: the images in which a counted class was detected that many times ("two dogs")
COUNT = "count"
#: the images with an object of the named class in the named colour ("a red car")
COLOUR = "colour"
#: words that carry no meaning in a search for photos (dropped from the lexical query only)
STOP_WORDS = frozenset("""a an the of and or with in on at to for from by is are be this that these those it its
    photo photos picture pictures image images shot some any my me""".split())
_QUOTED = re.compile(r'["\u201c\u201d]([^"\u201c\u201d]+)["\u201c\u201d]')
#: the longest query accepted, in characters
MAX_QUERY_CHARS = 1000


@dataclass(frozen=True)
class ParsedQuery:
    """A text query taken apart: `phrases` (quoted, must appear in the OCR text) and `rest` (what is embedded and
    matched lexically; the whole text when nothing is quoted)."""

    text: str
    phrases: tuple[str, ...]
    rest: str
    #: (n, the thing counted) when the rest counts a thing ("two dogs"), else None (`count_query`)
    counted: tuple[int, str] | None = None
    #: the canonical text of a rest that names a thing ("dogs" → "a photo of a dog"; a counted thing's), else None
    canonical: str | None = None


def parse_query(query: str | None) -> ParsedQuery:
    """Strip and split a query into its quoted phrases and the rest.

    Raises:
        QueryError: an empty query, or one longer than `MAX_QUERY_CHARS` characters.
    """
    query = (query or "").strip()
    if not query:
        raise QueryError("query is empty: type a few words, e.g. 'a red handbag'")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"query is longer than {MAX_QUERY_CHARS} characters")
    phrases = tuple(p.strip() for p in _QUOTED.findall(query) if p.strip())
    rest = _QUOTED.sub(" ", query).strip() if phrases else query
    counted = count_query(rest) if rest else None
    canonical = (short_form(rest) or (short_form(counted[1]) if counted else None)) if rest else None
    return ParsedQuery(query, phrases, rest, counted, canonical)


def query_terms(text: str) -> list[str]:
    """The lexical terms of a query: lower-case words without stop words, each with its naive singular
    ("dogs" → "dogs", "dog"; "boxes" → "boxes", "box"), and the compound of each two adjacent words ("hot dog" →
    "hotdog"), which is how a name of several words is indexed (`clip_embedder.models.tagger.name_words`)."""
    out: list[str] = []
    words = re.findall(r"\w+", text.lower())
    for prev, w in zip(["", *words], words):
        if (prev and prev.isascii() and w.isascii() and prev.isalpha() and w.isalpha()
                and not {prev, w} & (STOP_WORDS | _NUMBER_WORDS)):
            out += [prev + w, prev + singular(w)]
        if w in STOP_WORDS or w.isdigit():
            continue
        out.append(w)
        if w.isascii() and len(w) > 4 and w.endswith("es"):
            out.append(w[:-2])
        if w.isascii() and len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            out.append(w[:-1])
    return list(dict.fromkeys(out))


def content_groups(text: str) -> list[list[str]]:
    """The content words of a query, each with its singular (["dogs", "dog"]; one word when they are the same): stop
    words, numbers and colour words left out. A sentence's sure lexical match must hold words of half of them
    (`sentence_min_groups`)."""
    groups: list[list[str]] = []
    for w in dict.fromkeys(re.findall(r"\w+", text.lower())):
        if w in STOP_WORDS or w in _NUMBER_WORDS or w in COLOUR_WORDS or w.isdigit():
            continue
        groups.append(list(dict.fromkeys([w, singular(w)])))
    return groups


def sentence_min_groups(parsed: "ParsedQuery", groups: list[list[str]]) -> int:
    """How many of the query's content words a sure lexical match must hold: half of them (rounded down) for a
    sentence of three or more content words — one word of "A man playing the accordion on the street" matching
    "man" is no answer to it — else one (a word or a phrase that names a thing, a count)."""
    if parsed.canonical is not None or parsed.counted is not None or len(groups) < 3:
        return 1
    return len(groups) // 2


#: words a short query may open with that do not change what it asks for ("a photo of a dog" asks for "dog")
_ARTICLE = r"(?:(?:a|an|the|some)\s+)?"
_LEADING = re.compile(rf"^{_ARTICLE}(?:(?:photos?|pictures?|images?|shots?)\s+of\s+)?{_ARTICLE}", re.I)
#: plurals that the naive "-s" rule gets wrong (COCO's classes and common photo words)
IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
             "knives": "knife", "teeth": "tooth", "feet": "foot", "geese": "goose", "leaves": "leaf",
             "glasses": "glass", "buses": "bus", "boxes": "box", "couches": "couch", "benches": "bench",
             "sandwiches": "sandwich", "dishes": "dish", "skis": "skis", "scissors": "scissors"}
#: the longest query (in words, after its opening) taken as the name of a thing
SHORT_QUERY_WORDS = 3
_NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten several many".split())


def singular(word: str) -> str:
    """A noun's singular by `IRREGULAR` or the naive rule ("dogs" → "dog", "boxes" → "box", "glass" stays)."""
    w = word.lower()
    if w in IRREGULAR:
        return IRREGULAR[w]
    if len(w) > 4 and w.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def short_form(text: str) -> str | None:
    """The canonical text of a query that names a thing — "dog", "a dog", "dogs", "a photo of a dog" all give
    "a photo of a dog", the form of the indexed descriptions (`indexing.describe`) — or None for a sentence, a
    query of more than SHORT_QUERY_WORDS words, or one that counts ("two dogs": a count the words must keep)."""
    body = _LEADING.sub("", text.strip().rstrip(".!?").strip())
    words = body.split()
    if not words or len(words) > SHORT_QUERY_WORDS or words[0].lower() in _NUMBER_WORDS or words[0].isdigit() \
            or not all(re.fullmatch(r"[\w'-]+", w) for w in words):
        return None
    words[-1] = singular(words[-1])
    thing = " ".join(words).lower()
    return f"a photo of {'an' if thing[0] in 'aeiou' else 'a'} {thing}"


_COUNTS = {w: n for n, w in enumerate("zero one two three four five six seven eight nine ten".split())}
#: colour words: checked on detected objects' colours (`colour_pairs`), else said unchecked in the answer
COLOUR_WORDS = frozenset("""red green blue yellow orange purple pink brown black white grey gray silver gold beige
    violet turquoise""".split())


def count_query(text: str) -> tuple[int, str] | None:
    """(n, the thing counted, singular) of a query that counts ("two dogs", "3 cats", "a photo of two people"), or
    None."""
    body = _LEADING.sub("", text.strip().rstrip(".!?").strip()).lower()
    m = re.fullmatch(r"(\d{1,2}|zero|one|two|three|four|five|six|seven|eight|nine|ten)\s+([\w' -]{2,40})", body)
    if m is None:
        return None
    n = int(m.group(1)) if m.group(1).isdigit() else _COUNTS[m.group(1)]
    words = m.group(2).split()
    if len(words) > SHORT_QUERY_WORDS:  # "two men walking on a beach": a sentence, not a count of a thing
        return None
    words[-1] = singular(words[-1])
    return n, " ".join(words)


def conjunction_parts(text: str) -> list[str] | None:
    """The things a query joins with "and" or commas, each a name of one or two words, singular ("a man and a woman"
    → ["man", "woman"]; "cats, dogs and a bird" → ["cat", "dog", "bird"]), or None when it is not such a list (one
    thing, or a part longer than two words: "A cat and a dog lying together" is a sentence)."""
    body = _LEADING.sub("", text.strip().rstrip(".!?").strip()).lower()
    parts = [p for p in re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+", body) if p]
    if len(parts) < 2:
        return None
    out = []
    for part in parts:
        words = re.sub(r"^(?:a|an|the|one)\s+", "", part.strip()).split()
        if not 1 <= len(words) <= 2 or not all(re.fullmatch(r"[a-z][a-z'-]*", w) for w in words):
            return None
        out.append(" ".join([*words[:-1], singular(words[-1])]))
    return out


def unused_colours(text: str) -> list[str]:
    """The colour words of a query ("orange" excepted: a fruit too)."""
    return [w for w in re.findall(r"[a-z]+", text.lower()) if w in COLOUR_WORDS and w != "orange"]


def colour_pairs(text: str, labels: set[str]) -> list[tuple[str, str]]:
    """(basic colour name, detector label) for each colour word of a query followed, within its next three words, by
    a label of `labels` ("a red car" → ("red", "car"); "grey double-decker buses" → ("gray", "bus")).

    Returns:
        pairs in query order; a colour word with no label after it gives none.
    """
    words = re.findall(r"[a-z]+", text.lower())
    out: list[tuple[str, str]] = []
    for i, w in enumerate(words):
        colour = COLOUR_ALIASES.get(w, w)
        if colour not in COLOUR_NAMES:
            continue
        found = next((thing for j in range(i + 1, min(i + 4, len(words))) for n in (2, 1)
                      if j + n <= len(words)
                      and (thing := " ".join([*words[j:j + n - 1], singular(words[j + n - 1])])) in labels), None)
        if found is not None:
            out.append((colour, found))
    return out


@dataclass
class ImageRanking:
    """One signal's candidates reduced to one entry per image.

    `ranked`: [(image id, similarity)] best first; `confident`: the images with a confident item; `first_item`:
    image id → (similarity, item id) of the image's best item in this signal.
    """

    ranked: list[tuple[int, float]] = field(default_factory=list)
    confident: set[int] = field(default_factory=set)
    first_item: dict[int, tuple[float, int]] = field(default_factory=dict)


def rank_images(candidates: list[tuple[int, float]], rows: Mapping[int, tuple[int, float | None]], *, floor: float,
                strong: Iterable[int] = (), allowed: set[int] | None = None) -> ImageRanking:
    """One (image, similarity) per image, best first, from a signal's ranked items.

    Args:
        candidates: [(item id, similarity)] (any order; sorted here by similarity rounded to 4 places, then by the
            item's detection score: many crops share one description, so surer detections come first among equals).
        rows: item id → (image id, detection score or None); an item missing there (deleted meanwhile) is skipped.
        floor: a similarity at or above it makes the item's image confident (`inf`: never, for lexical ranks).
        strong: items that make their image confident whatever their similarity (sure lexical matches).
        allowed: only these images (those showing a quoted phrase), or None for all.
    """
    strong = set(strong)
    out = ImageRanking()
    ordered = sorted(candidates, key=lambda t: (-round(t[1], 4), -((rows.get(t[0]) or (0, None))[1] or 0.0)))
    for item_id, sim in ordered:
        if item_id not in rows:
            continue
        image_id = rows[item_id][0]
        if allowed is not None and image_id not in allowed:
            continue
        if sim >= floor or item_id in strong:
            out.confident.add(image_id)
        if image_id in out.first_item:
            continue
        out.first_item[image_id] = (sim, item_id)
        out.ranked.append((image_id, sim))
    return out


def phrase_ranking(matched: set[int], confident: set[int]) -> list[tuple[int, float]]:
    """The ranked list of the images showing every quoted phrase: those already confident by another signal first,
    then the most recent (highest id), each with similarity 1.0."""
    return [(i, 1.0) for i in sorted(matched, key=lambda i: (i not in confident, -i))]


def best_items(dense: Iterable[ImageRanking], lexical: ImageRanking | None,
               whole_items: Mapping[int, int] | None = None) -> dict[int, int]:
    """image id → the item a hit shows: the item with the highest similarity over the dense spaces (the first space
    wins a tie), else its best lexical match, else (phrase matches only) its whole-image item from `whole_items`."""
    best: dict[int, tuple[float, int]] = {}
    for ranking in dense:
        for image_id, (sim, item_id) in ranking.first_item.items():
            if sim > best.get(image_id, (-2.0, 0))[0]:
                best[image_id] = (sim, item_id)
    out = {image_id: item_id for image_id, (_, item_id) in best.items()}
    for image_id, (_, item_id) in (lexical.first_item.items() if lexical else ()):
        out.setdefault(image_id, item_id)
    for image_id, item_id in (whole_items or {}).items():
        out.setdefault(image_id, item_id)
    return out


@dataclass
class Decision:
    """What a text query returns: `chosen` [(image id, fused score)] at most top_k, how many weak ones were
    `hidden`, and whether any image was confident at all (`found`)."""

    chosen: list[tuple[int, float]]
    hidden: int
    found: bool


def decide(ranked: dict[str, list[tuple[int, float]]], confident: set[int], *, top_k: int,
           include_weak: bool) -> Decision:
    """Fuse the per-signal image lists (RRF) and keep the confident images first; the weak ones follow only with
    `include_weak`, else they are counted as hidden (as many as would have filled the top_k)."""
    fused = rrf_fuse(ranked)
    keep = [(img, sc) for img, sc in fused if img in confident]
    weak = [(img, sc) for img, sc in fused if img not in confident]
    chosen = (keep + (weak if include_weak else []))[:top_k]
    hidden = 0 if include_weak else min(len(weak), max(top_k - len(keep), 0))
    return Decision(chosen, hidden, bool(keep))


def nothing_found(query: str, hidden: int) -> str:
    """The warning of a query with no confident hit."""
    return f"nothing in this index looks like {query!r}" + (
        f" ({hidden} weaker results below the relevance floor are hidden; include_weak=true shows them)"
        if hidden else "")
