"""ImageNet tags: the MobileNet-v1 classifier head run on the embedding the `mobilenet` space computes anyway.

The head (`mobilenet_quant_v1_224_head_layers.tflite`, google-coral/test_data) takes exactly the
embedding extractor's output (`[1,1,1,1024]` uint8, scale 0.02353, zero point 0) and returns 1,001
uint8 probabilities (scale 1/256; index 0 is `background`, then the 1,000 ILSVRC-2012 classes in
`imagenet_labels.txt`, synonyms comma-separated). So a whole image or a crop gets its ImageNet
classes for one ~0.1 ms invoke on features already in hand: no second CNN pass.

Each tag also brings *words* for lexical search: every synonym on its label line and its WordNet
hypernyms for the groups people search by (a "Labrador retriever" is a dog, a "tabby" a cat, a
"macaw" a bird, a "convertible" a car), see `HYPERNYM_RANGES` / `HYPERNYM_NAMES`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import numpy as np

from clip_embedder.models.detector import file_sha256
from clip_embedder.models.base import LazyModel
from clip_embedder.models.registry import TAGGERS


@dataclass(frozen=True)
class Tag:
    """An ImageNet class given to an item. `label`: the first name on its label line (e.g. "Labrador
    retriever"); `score`: its probability, 0..1; `source`: the tagger ("imagenet")."""

    label: str
    score: float
    source: str = "imagenet"


#: WordNet hypernyms of contiguous ILSVRC-2012 class-id ranges (0-based ids, i.e. label-file line - 1;
#: the ranges follow the WordNet hierarchy of the ILSVRC-2012 synsets: 151-268 are dog breeds, 281-285
#: domestic cats, …).
HYPERNYM_RANGES: list[tuple[int, int, str]] = [
    (0, 6, "fish"), (389, 397, "fish"),
    (7, 24, "bird"), (80, 100, "bird"), (127, 146, "bird"),
    (33, 37, "turtle"), (38, 48, "lizard reptile"), (52, 68, "snake reptile"),
    (151, 268, "dog puppy"), (269, 280, "wild dog canine"),
    (281, 285, "cat kitten"), (286, 293, "big cat wildcat"), (294, 297, "bear"),
    (365, 384, "monkey primate ape"), (948, 957, "fruit"), (984, 995, "flower plant"),
]
#: hypernyms of single classes, by the first name on their label line
HYPERNYM_NAMES: dict[str, str] = {
    **dict.fromkeys(["ambulance", "beach wagon", "cab", "convertible", "jeep", "limousine", "minivan", "Model T",
                     "police van", "racer", "sports car", "pickup"], "car automobile vehicle"),
    **dict.fromkeys(["fire engine", "garbage truck", "moving van", "tow truck", "trailer truck"], "truck vehicle"),
    **dict.fromkeys(["school bus", "trolleybus", "minibus"], "bus vehicle"),
    **dict.fromkeys(["analog clock", "digital clock", "wall clock"], "clock"),
    **dict.fromkeys(["purse", "mailbag", "backpack"], "bag"),
    **dict.fromkeys(["hotdog"], "food sausage"),
    **dict.fromkeys(["pizza", "cheeseburger", "burrito", "bagel", "pretzel"], "food"),
    **dict.fromkeys(["broccoli", "cauliflower", "zucchini", "cucumber", "bell pepper", "head cabbage"], "vegetable"),
    **dict.fromkeys(["military uniform"], "soldier uniform"),
    **dict.fromkeys(["macaw", "African grey", "lorikeet", "sulphur-crested cockatoo"], "parrot bird"),
    **dict.fromkeys(["passenger car", "electric locomotive", "steam locomotive", "freight car", "streetcar",
                     "bullet train"], "train railway"),
    **dict.fromkeys(["Windsor tie", "bow tie"], "tie necktie"),
    **dict.fromkeys(["four-poster", "quilt", "studio couch", "cradle", "crib"], "bed"),
    **dict.fromkeys(["teddy"], "teddybear toy"),
    **dict.fromkeys(["airliner", "warplane"], "airplane plane aircraft"),
    **dict.fromkeys(["speedboat", "canoe", "yawl", "catamaran", "trimaran", "lifeboat", "fireboat", "gondola"], "boat"),
}
#: words people use for the COCO detector classes (and what WordNet lists as their synonyms)
COCO_SYNONYMS: dict[str, str] = {
    "person": "people man woman child boy girl human", "car": "automobile vehicle", "bicycle": "bike cycle",
    "motorcycle": "motorbike", "airplane": "aeroplane plane aircraft", "train": "railway locomotive",
    "truck": "lorry vehicle", "boat": "ship", "dog": "puppy", "cat": "kitten", "handbag": "purse bag",
    "backpack": "bag rucksack", "cell phone": "mobile phone smartphone", "tv": "television screen",
    "laptop": "computer notebook", "couch": "sofa", "sports ball": "ball", "dining table": "table",
    "potted plant": "plant houseplant", "wine glass": "glass", "hot dog": "hotdog sausage", "donut": "doughnut",
    "bird": "", "horse": "pony", "sheep": "lamb", "cow": "cattle", "tie": "necktie", "bench": "seat",
}


def name_words(names: list[str]) -> list[str]:
    """The keywords of a list of synonymous names, phrase-aware: a one-word name is itself; a name of several words
    ("hot dog", "golden retriever", "red hot") is its compound ("hotdog", which a query's adjacent words also form:
    `clip_embedder.search.text.query_terms`) and its head, the last word ("retriever") — unless the compound is itself
    one of the names (a lexicalised compound: "hot dog, hotdog" is not a dog). So "dog" no longer matches a hot dog,
    while "hot dog" does.

    Returns:
        lower-case words, each once, in order.
    """
    singles = {n.lower() for n in names if len(n.replace("-", " ").split()) == 1}
    out: list[str] = []
    for name in names:
        parts = name.lower().replace("-", " ").split()
        if len(parts) == 1:
            out.append(parts[0])
        elif parts:
            compound = "".join(parts)
            out.append(compound)
            if compound not in singles:
                out.append(parts[-1])
    return list(dict.fromkeys(out))


def label_words(label: str) -> str:
    """The words a detector label is searchable by: itself (phrase-aware: `name_words`) and its everyday synonyms."""
    return " ".join(name_words([label, *COCO_SYNONYMS.get(label, "").split()]))


class ImageNetTagger(LazyModel):
    """Top ImageNet classes of an image or crop from its MobileNet-v1 features.

    Args:
        head: the classifier head (.tflite). labels: `imagenet_labels.txt` (1,001 lines, background first).
        min_score: probability floor of a tag (0..1). top_k: at most this many tags per item.
        confident_score: a tag this sure makes a lexical match on its words a confident hit; a tag between
            `min_score` and it only helps ranking.

    Loads lazily under a lock, like the embedders (`LazyModel`).
    """

    source = "imagenet"

    @classmethod
    def from_settings(cls, settings: Any) -> ImageNetTagger:
        """TAGGER=imagenet as configured: TAGGER_WEIGHTS, TAGGER_LABELS, TAG_MIN_SCORE, TAG_TOP_K,
        TAG_CONFIDENT_SCORE."""
        return cls(settings.tagger_weights, settings.tagger_labels, min_score=settings.tag_min_score,
                   top_k=settings.tag_top_k, confident_score=settings.tag_confident_score)

    def __init__(self, head: Path, labels: Path, *, min_score: float = 0.15, top_k: int = 3,
                 confident_score: float = 0.5):
        super().__init__()
        self.head, self.labels_path = Path(head), Path(labels)
        self.min_score, self.top_k = float(min_score), int(top_k)
        self.confident_score = float(confident_score)

    @property
    def signature(self) -> str:
        """What the tags depend on (head weights, floor, top_k): stored with each image so a change re-tags.

        Raises:
            FileNotFoundError: the head or the labels file is missing (the message says which setting).
        """
        for path, setting in ((self.head, "TAGGER_WEIGHTS"), (self.labels_path, "TAGGER_LABELS")):
            if not path.is_file():
                raise FileNotFoundError(f"ImageNet tagger file not found at {path}. Set {setting}, fetch it with "
                                        "`python -m clip_embedder.scripts.fetch_assets`, or set TAGGER=off.")
        if not hasattr(self, "_signature"):
            self._signature = (f"imagenet:{file_sha256(self.head)[:12]}:{self.min_score:g}:{self.top_k}:"
                               f"{self.confident_score:g}")
        return self._signature

    def _load(self) -> None:
        """Load the head and the labels (through `load()`).

        Raises:
            FileNotFoundError: a file is missing. ValueError: the labels do not match the head's outputs.
        """
        _ = self.signature
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

        self._it = Interpreter(str(self.head), num_threads=1)
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]
        self._out = self._it.get_output_details()[0]
        lines = self.labels_path.read_text(encoding="utf-8").splitlines()
        if len(lines) != int(self._out["shape"][-1]):
            raise ValueError(f"{self.labels_path} has {len(lines)} lines; the head has "
                             f"{int(self._out['shape'][-1])} outputs")
        self.synonyms = [[w.strip() for w in line.split(",") if w.strip()] for line in lines]
        self.names = [syn[0] if syn else "" for syn in self.synonyms]
        self._hypernyms = [""] * len(lines)
        for lo, hi, words in HYPERNYM_RANGES:
            for i in range(lo + 1, hi + 2):  # +1: line 0 is `background`
                self._hypernyms[i] = words
        for i, name in enumerate(self.names):
            if name in HYPERNYM_NAMES:
                self._hypernyms[i] = HYPERNYM_NAMES[name]
        self._index = {name: i for i, name in enumerate(self.names)}
        self._run_lock = threading.Lock()

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """ImageNet class probabilities of MobileNet-v1 features.

        Args:
            features: (n, 1024) uint8, the embedding extractor's raw (quantised) output.

        Returns:
            (n, 1001) float32 probabilities (column 0 = background).
        """
        self.load()
        features = np.asarray(features, np.uint8).reshape(-1, 1024)
        scale = float(self._out["quantization"][0]) or 1.0 / 256
        out = np.empty((len(features), int(self._out["shape"][-1])), np.float32)
        with self._run_lock:  # one interpreter; the head does not take a batch dimension (XNNPack refuses it)
            for i, f in enumerate(features):
                self._it.set_tensor(self._in["index"], f.reshape(1, 1, 1, 1024))
                self._it.invoke()
                out[i] = self._it.get_tensor(self._out["index"]).reshape(-1)
        return out * scale

    def tag(self, features: np.ndarray) -> list[list[Tag]]:
        """The top `top_k` classes at or above `min_score` per row of `features` ((n, 1024) uint8), best first."""
        probs = self.probabilities(features)
        probs[:, 0] = 0.0  # background is not a tag
        out = []
        for p in probs:
            top = np.argsort(-p)[: self.top_k]
            out.append([Tag(self.names[i], round(float(p[i]), 4), self.source) for i in top if p[i] >= self.min_score])
        return out

    def words(self, label: str) -> str:
        """Every word a tag is searchable by: its synonyms on the label line and its hypernyms."""
        self.load()
        i = self._index.get(label)
        if i is None:
            return label
        return " ".join(name_words(self.synonyms[i]) + ([self._hypernyms[i]] if self._hypernyms[i] else []))



def create_tagger(settings) -> ImageNetTagger | None:
    """The tagger the settings ask for (TAGGER=imagenet), or None (TAGGER=off): `TAGGERS` in
    `clip_embedder.models.registry`."""
    return TAGGERS.create(settings.tagger, settings)
