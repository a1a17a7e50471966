"""What text search understands: vocabulary, synonyms, honest "no match", OCR, and what words cost.

All 128 COCO128 images and the nine photos of ../shared/datasets/photos are indexed (through a folder
of links, as `embed_and_index --dataset_path` would) into fresh embedded PostgreSQL databases, with
the demo's detector (YOLOv5n's pretrained head cut to the subset's 7 classes, as `yolov5/baseline.py`
builds the first champion) unless `--detector coco80`. Two configurations, side by side in one run:

- before: no tags, no OCR, dense text space only, every hit returned (what text search did before);
- after:  ImageNet tags, lexical + dense hybrid, relevance floors.

Measured per query group (ground truth: COCO128's annotations of all 80 classes, and the photos' README):
hit@10 and precision@10 for the 7 class names, 24 COCO concepts outside them, synonyms, concepts of
the nine photos (hit@3); negatives (concepts absent from the index): the share answered with no confident
hit. The relevance floor of the text space is calibrated here: the similarity of the best relevant hit of
each positive query against the best hit of each negative query. OCR: words rendered with Pillow onto
COCO128 photos (English with RapidOCR, Korean with Tesseract kor+eng) → hit@1 of the quoted word, ms per
image. Indexing cost of the tagger: the same images indexed with TAGGER=off and TAGGER=imagenet.

Run through `python benchmarks/bench_quality.py` (its second part; `--skip-words` leaves it out,
`--detector coco80` uses the 80-class detector, `--skip-ocr` leaves OCR out).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import FONTS, render_sign  # one sign renderer for the tests and this benchmark

from common import SHARED, machine

COCO = SHARED / "datasets" / "coco128"
PHOTOS = SHARED / "datasets" / "photos"
MODELS = SHARED / "models"
SUBSET_CLASSES = ["person", "car", "cell phone", "laptop", "book", "handbag", "sports ball"]
#: COCO classes present in COCO128 but outside the 7 subset classes (image counts in COCO128: 1 to 10)
CONCEPTS = ["zebra", "umbrella", "broccoli", "clock", "dog", "pizza", "giraffe", "train", "elephant", "cat",
            "airplane", "bus", "truck", "cake", "bed", "couch", "kite", "bicycle", "motorcycle", "bird",
            "teddy bear", "banana", "tie", "potted plant"]
#: query → the COCO class it means
SYNONYMS = {"purse": "handbag", "automobile": "car", "puppy": "dog", "kitten": "cat", "sofa": "couch",
            "aeroplane": "airplane", "motorbike": "motorcycle", "doughnut": "donut", "television": "tv",
            "mobile phone": "cell phone", "necktie": "tie", "lorry": "truck"}
#: query → the photo of ../shared/datasets/photos that shows it (hit@3)
PHOTO_CONCEPTS = {"macaw": "parrot.jpg", "parrot": "parrot.jpg", "military uniform": "grace_hopper.jpg",
                  "daisy": "sunflower.jpg", "hot dog": "hot_dog.jpg", "owl": "owl.jpg", "a cat": "cat_720p.jpg"}
#: concepts absent from COCO128 and the nine photos
NEGATIVES = ["spaceship", "volcano", "submarine", "snowmobile", "violin", "penguin", "lobster", "tractor",
             "castle", "waterfall", "jellyfish", "accordion", "igloo", "lighthouse", "astronaut", "pyramid",
             "tiger", "dinosaur", "harp", "scuba diver"]
OCR_EN = ["BAKERY", "EXIT", "PHARMACY", "HOTEL", "GARAGE", "LIBRARY"]
OCR_KO = ["안녕하세요", "고양이 사진", "김치찌개", "도서관", "서울역 출구", "병원"]


def gt_labels() -> dict[str, set[str]]:
    """file name → the COCO classes annotated in it (COCO128) or named in the photos' README."""
    d = json.loads((COCO / "annotations" / "instances_coco128_train2017.json").read_text())
    cats = {c["id"]: c["name"] for c in d["categories"]}
    names = {im["id"]: im["file_name"] for im in d["images"]}
    out: dict[str, set[str]] = {n: set() for n in names.values()}
    for a in d["annotations"]:
        out[names[a["image_id"]]].add(cats[a["category_id"]])
    out.update({"cat_720p.jpg": {"cat"}, "pets.jpg": {"cat", "dog"}, "hot_dog.jpg": {"hot dog"},
                "owl.jpg": {"bird"}, "parrot.jpg": {"bird"}, "bird.jpg": {"bird"}, "sunflower.jpg": set(),
                "kite_and_cold.jpg": {"kite", "person"}, "grace_hopper.jpg": {"person", "tie"}})
    return out


class Run:
    """One configuration: its own database, indexer and search service."""

    def __init__(self, work: Path, name: str, detector_weights: str, **overrides):
        from clip_embedder.config import Settings
        from clip_embedder.db.store import Store
        from clip_embedder.models.detector import load_detector
        from clip_embedder.models.embedders import create_embedder

        m = MODELS / "mobilenet"
        self.settings = Settings(
            _env_file=None, pgdata_dir=work / name / "pg", faiss_dir=work / name / "faiss",
            detector_weights=detector_weights, spaces=["mobilenet", "text"],
            mobilenet_weights=m / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
            tagger_weights=m / "mobilenet_quant_v1_224_head_layers.tflite", tagger_labels=m / "imagenet_labels.txt",
            **overrides)
        self.store = Store.open(self.settings)
        self.detector = load_detector(self.settings)
        self.embedders = {s: create_embedder(s, self.settings).load() for s in self.settings.spaces}
        for e in self.embedders.values():
            self.store.spaces.ensure(e.identity)

    def index(self, folder: Path):
        from clip_embedder.indexing.batch import SourceFile
        from clip_embedder.indexing.pipeline import Indexer

        indexer = Indexer.from_settings(self.settings, self.store, self.detector, self.embedders)
        files = [SourceFile.from_folder(p, folder) for p in sorted(folder.iterdir())]
        for f in files:  # the links' names, not their targets' (what people see)
            f.file_name = Path(f.path).name
        return indexer.run(files, progress=False)

    def service(self):
        from clip_embedder.indexing.faiss_index import SpaceIndex
        from clip_embedder.search.service import SearchService

        for e in self.embedders.values():
            SpaceIndex.load_or_build(self.store, e.identity, self.settings.faiss_dir)
        return SearchService.create(self.settings, self.store, self.detector)


def names_of(svc, hits) -> list[str]:
    return [h.file_name for h in hits]


def evaluate(svc, gt: dict[str, set[str]], *, before: bool, k: int = 10) -> dict:
    """Figures of one configuration. `before`: dense only, every hit returned (no floor, no lexical)."""
    svc.lexical = not before

    def search(q: str, top_k: int = k):
        return svc.search_text(q, top_k=top_k, include_weak=before)

    def group(queries: dict[str, str]) -> tuple[float, float, list[str]]:
        hits_at, precs, lines = [], [], []
        for q, cls in queries.items():
            files = names_of(svc, search(q).hits)
            rel = [cls in gt.get(f, set()) for f in files]
            hits_at.append(any(rel))
            precs.append(float(np.mean(rel)) if rel else 0.0)
            lines.append(f"{q} {sum(rel)}/{len(rel)}")
        return float(np.mean(hits_at)), float(np.mean(precs)), lines

    out = {}
    out["classes"] = group({c: c for c in SUBSET_CLASSES})
    out["concepts"] = group({c: c for c in CONCEPTS})
    out["synonyms"] = group(SYNONYMS)
    photo_hits = []
    for q, f in PHOTO_CONCEPTS.items():
        photo_hits.append(f in names_of(svc, search(q, 3).hits))
    out["photos@3"] = (float(np.mean(photo_hits)),
                       [q for (q, _), ok in zip(PHOTO_CONCEPTS.items(), photo_hits) if not ok])
    empty = [q for q in NEGATIVES if not search(q).hits]
    out["negatives"] = (len(empty) / len(NEGATIVES), [q for q in NEGATIVES if q not in empty])
    return out


def calibrate(svc, gt: dict[str, set[str]]) -> None:
    """Print the text space's similarity of the best relevant hit per positive query and of the best hit per
    negative query, and the floor that separates them best."""
    svc.lexical = False
    pos, neg = [], []
    queries = {**{c: c for c in SUBSET_CLASSES + CONCEPTS}, **SYNONYMS}
    for q, cls in queries.items():
        hits = svc.search_text(q, top_k=50, include_weak=True, spaces=["text"]).hits
        rel = [h.spaces["text"]["similarity"] for h in hits if cls in gt.get(h.file_name, set()) and "text" in h.spaces]
        if rel:
            pos.append(max(rel))
    for q in NEGATIVES:
        hits = svc.search_text(q, top_k=1, include_weak=True, spaces=["text"]).hits
        if hits and "text" in hits[0].spaces:
            neg.append(hits[0].spaces["text"]["similarity"])
    pos_a, neg_a = np.array(pos), np.array(neg)
    print(f"  text space, best relevant hit of {len(pos)} positive queries: min {pos_a.min():.3f} "
          f"p10 {np.percentile(pos_a, 10):.3f} median {np.median(pos_a):.3f}")
    print(f"  text space, best hit of {len(neg)} negative queries:          median {np.median(neg_a):.3f} "
          f"p90 {np.percentile(neg_a, 90):.3f} max {neg_a.max():.3f}")
    best = max(np.arange(0.30, 0.80, 0.01), key=lambda f: (pos_a >= f).mean() + (neg_a < f).mean())
    print(f"  floor maximising (positives kept + negatives refused): {best:.2f} → positives kept "
          f"{(pos_a >= best).mean():.2f}, negatives refused {(neg_a < best).mean():.2f} "
          f"(TEXT_MIN_SIMILARITY now {svc.settings.text_min_similarity})")
    svc.lexical = True


def report(name: str, r: dict) -> None:
    for g in ("classes", "concepts", "synonyms"):
        hit, prec, lines = r[g]
        print(f"  {name:<7} {g:<9} hit@10 {hit:.3f}  precision@10 {prec:.3f}  | {', '.join(lines)}")
    print(f"  {name:<7} photos    hit@3  {r['photos@3'][0]:.3f}  missed: {r['photos@3'][1] or 'none'}")
    print(f"  {name:<7} negatives answered 'no match' {r['negatives'][0]:.2f}  "
          f"(confident hits for: {r['negatives'][1] or 'none'})")


def ocr_bench(work: Path, detector_weights: str) -> None:
    images = sorted((COCO / "images").glob("*.jpg"))
    fonts = FONTS
    for lang, words, engine in (("en", OCR_EN, "rapidocr"), ("ko", OCR_KO, "tesseract")):
        if not fonts[lang].is_file():
            print(f"  {lang}: font {fonts[lang]} missing (apt-get install fonts-dejavu-core fonts-nanum)")
            continue
        folder = work / f"ocr_{lang}"
        folder.mkdir()
        for i, w in enumerate(words):
            render_sign(images[40 + i], w, folder / f"sign_{lang}_{i}.jpg", fonts[lang])
        for p in images[60:66]:  # photos without rendered text in the same index
            os.symlink(p, folder / p.name)
        run = Run(work, f"ocr_{lang}", detector_weights, ocr=engine)
        stats = run.index(folder)
        svc = run.service()
        top1 = []
        for i, w in enumerate(words):
            hits = svc.search_text(f'"{w}"', top_k=3).hits
            top1.append(bool(hits) and hits[0].file_name == f"sign_{lang}_{i}.jpg")
        n = stats.seen
        print(f"  OCR {engine:<9} ({lang}) quoted-word hit@1 {np.mean(top1):.2f} ({sum(top1)}/{len(words)}; "
              f"missed: {[w for w, ok in zip(words, top1) if not ok] or 'none'}), "
              f"{1000 * stats.timings['ocr'] / n:.0f} ms per image over {n} images")
        run.store.close()


def add_arguments(p) -> None:
    """The options of this part of bench_quality.py."""
    p.add_argument("--detector", choices=("subset7", "coco80"), default="subset7",
                   help="words part: subset7 = the demo's first champion (pretrained head cut to the 7 subset "
                        "classes); coco80 = the general 80-class COCO detector")
    p.add_argument("--skip-ocr", action="store_true", help="words part: leave OCR out")
    p.add_argument("--skip-words", action="store_true", help="leave the words part out")


def detectors_on_photos(subset_weights: str) -> None:
    """What the demo's 7-class champion and the general 80-class detector find on the nine photos."""
    from clip_embedder.models.detector import Detector

    coco80 = Detector.load(str(MODELS / "yolov5" / "yolov5n.pt"), conf=0.15)
    subset7 = Detector.load(subset_weights, conf=0.15)
    print(f"detectors on the nine photos (conf 0.15): subset7 knows {len(subset7.names)} classes, "
          f"coco80 {len(coco80.names)}")
    for p in sorted(PHOTOS.glob("*.jpg")):
        im = Image.open(p).convert("RGB")
        found = []
        for det in (subset7, coco80):
            labels = [d.label for d in det.detect([im])[0]]
            found.append(", ".join(f"{n}x {lab}" if n > 1 else lab
                                   for lab, n in sorted({x: labels.count(x) for x in labels}.items())) or "-")
        print(f"  {p.name:<18} subset7: {found[0]:<28} coco80: {found[1]}")


def run(args) -> None:
    """The words part: vocabulary, synonyms, no-match, OCR, the tagger's cost (see the module docstring)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "yolov5"))
    work = Path(tempfile.mkdtemp(prefix="words_"))
    print(f"machine: {machine()}")
    weights = str(MODELS / "yolov5" / "yolov5n.pt")
    if args.detector == "subset7":
        from mlflow_common import subset_head_weights

        weights = subset_head_weights(weights, SUBSET_CLASSES, work / "weights")
        detectors_on_photos(weights)
    folder = work / "library"
    folder.mkdir()
    for src in sorted((COCO / "images").glob("*.jpg")) + sorted(PHOTOS.glob("*.jpg")):
        os.symlink(src, folder / src.name)
    gt = gt_labels()
    print(f"index: {len(list(folder.iterdir()))} images (COCO128 + photos), detector {args.detector}")

    before = Run(work, "before", weights, tagger="off", ocr="off")
    t = time.perf_counter()
    s_before = before.index(folder)
    print(f"  before: indexed in {time.perf_counter() - t:.1f}s | {s_before.summary()}")
    after = Run(work, "after", weights, tagger="imagenet", ocr="off")
    t = time.perf_counter()
    s_after = after.index(folder)
    print(f"  after:  indexed in {time.perf_counter() - t:.1f}s | {s_after.summary()}")
    # the tagger's cost: the same images, tagger off vs on, alternating in one process (models warm), 3 times each.
    # Wall time carries the detector's run-to-run noise (±5 %); the stages the tagger touches (tag = MobileNet
    # features + head, describe, embed, write) are also compared on their own.
    touched = ("tag", "describe", "embed", "write")
    costs: dict[str, list[tuple[float, float]]] = {}
    for mode in ("off", "imagenet") * 3:
        r = Run(work, f"cost_{mode}_{time.monotonic_ns()}", weights, tagger=mode, ocr="off")
        st = r.index(folder)
        costs.setdefault(mode, []).append((st.seconds, sum(st.timings.get(x, 0.0) for x in touched)))
        r.store.close()
    wall = {m: float(np.median([w for w, _ in v])) for m, v in costs.items()}
    part = {m: float(np.median([t for _, t in v])) for m, v in costs.items()}
    n = s_after.seen
    print(f"indexing cost of the tagger ({n} images, median of 3 alternating runs): wall off {wall['off']:.2f}s, "
          f"imagenet {wall['imagenet']:.2f}s → {100 * (wall['imagenet'] - wall['off']) / wall['off']:+.1f}%; "
          f"stages it touches ({'+'.join(touched)}) {part['off']:.2f}s → {part['imagenet']:.2f}s = "
          f"{100 * (part['imagenet'] - part['off']) / wall['off']:+.1f}% of indexing "
          f"({1000 * (part['imagenet'] - part['off']) / n:+.1f} ms per image)")

    svc_before, svc_after = before.service(), after.service()
    print("relevance floor (calibration, after):")
    calibrate(svc_after, gt)
    print("text search (top 10 unless noted):")
    report("before", evaluate(svc_before, gt, before=True))
    report("after", evaluate(svc_after, gt, before=False))
    before.store.close()
    after.store.close()
    if not args.skip_ocr:
        print("text in the photo:")
        ocr_bench(work, weights)

