"""Analysis: what each local analyser costs and how well it does, on COCO128 + the nine shared photos.

Prints, on this machine:
1. ms per image per analyser (detector, tagger, faces, OCR, personal data, nudity) and for the whole analysis, over
   the 137 images; and the analysis's share of an image's indexing time when it runs as a job after indexing (the
   indexing pipeline's own stages timed on the same images, its OCR reused by the analysis).
2. Faces (BlazeFace full and short range): COCO128 images with a face found vs with a `person` annotation at least
   64 px tall; faces found on the nine photos (only grace_hopper.jpg shows a human face).
3. Nudity: the highest open_nsfw and NudeNet exposed-part scores on the 137 safe images, against the floors.
4. Personal data: recall and precision of OCR + Presidio on 48 rendered findings of 8 kinds (half with an English
   label, half with a Korean one), and the false findings in the text of the 137 photos themselves.

    python benchmarks/bench_analysis.py            # ~5 min on 2 cores
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from common import SHARED, bench_settings, machine, pct

COCO = SHARED / "datasets" / "coco128"
PHOTOS = SHARED / "datasets" / "photos"
FACES = SHARED / "models" / "faces"
FONTS = {"en": "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
         "ko": "/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf"}


def rrn(birth: str, serial: str) -> str:
    """A Korean resident registration number with its check digit (weights 2..9, 2..5; (11 - sum % 11) % 10)."""
    digits = [int(c) for c in birth + serial]
    total = sum(d * w for d, w in zip(digits, [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5]))
    return f"{birth}-{serial}{(11 - total % 11) % 10}"


def brn(first9: str) -> str:
    """A Korean business registration number with its check digit (weights 1,3,7,1,3,7,1,3,5 + the 9th digit x5 //
    10, then (10 - sum % 10) % 10)."""
    d = [int(c) for c in first9]
    total = sum(a * w for a, w in zip(d, [1, 3, 7, 1, 3, 7, 1, 3, 5])) + d[8] * 5 // 10
    s = first9 + str((10 - total % 10) % 10)
    return f"{s[:3]}-{s[3:5]}-{s[5:]}"


#: kind → (English label, Korean label, six values)
FINDINGS = {
    "CREDIT_CARD": ("Card", "카드", ["4111 1111 1111 1111", "5500 0000 0000 0004", "3782 822463 10005",
                                     "6011 1111 1111 1117", "4012 8888 8888 1881", "5105 1051 0510 5100"]),
    "EMAIL_ADDRESS": ("Mail", "메일", ["jane.doe@example.com", "kim.minji@naver.com", "help@shop.co.kr",
                                       "j.smith@mail.org", "info@hotel-seoul.kr", "lee@daum.net"]),
    "PHONE_NUMBER": ("Tel", "전화", ["010-1234-5678", "02-312-3456", "+82 10-9876-5432", "(212) 555-0199",
                                     "+44 20 7946 0958", "031-123-4567"]),
    "IBAN_CODE": ("IBAN", "계좌", ["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32",
                                   "NL91 ABNA 0417 1643 00", "ES91 2100 0418 4502 0005 1332",
                                   "FR14 2004 1010 0505 0001 3M02 606", "BE68 5390 0754 7034"]),
    "IP_ADDRESS": ("IP", "주소", ["192.168.1.20", "10.0.0.254", "172.16.5.4", "8.8.8.8", "203.0.113.77",
                                  "100.64.3.9"]),
    "URL": ("Web", "홈페이지", ["https://example.com/profile", "http://blog.naver.com/minji",
                                "https://shop.co.kr/order", "https://www.github.com/jane", "http://intranet.local/login",
                                "https://cafe.daum.net/seoul"]),
    "KR_RRN": ("ID", "주민번호", [rrn("900101", "123456"), rrn("851231", "234567"), rrn("010203", "345678"),
                                 rrn("770707", "112233"), rrn("920515", "254321"), rrn("000101", "412345")]),
    "KR_BRN": ("BRN", "사업자", [brn("123456789"), brn("220812345"), brn("101810234"), brn("314159265"),
                                 brn("271828182"), brn("605550123")]),
}


def render(src: Path, text: str, font: str, dest: Path) -> None:
    """`text` in black on a white band across a copy of `src` (scaled to 960 px wide so the longest line fits)."""
    im = Image.open(src).convert("RGB")
    im = im.resize((960, round(im.height * 960 / im.width)))
    f = ImageFont.truetype(font, 40)
    d = ImageDraw.Draw(im)
    _, _, right, bottom = d.textbbox((0, 0), text, font=f)
    d.rectangle((20, 20, 40 + right, 40 + bottom), fill="white")
    d.text((30, 30), text, font=f, fill="black")
    im.save(dest, quality=92)


def person_images(min_height: float = 64) -> set[str]:
    """COCO128 file names with a `person` annotation at least `min_height` px tall."""
    ann = json.loads((COCO / "annotations" / "instances_coco128_train2017.json").read_text())
    person = next(c["id"] for c in ann["categories"] if c["name"] == "person")
    names = {i["id"]: i["file_name"] for i in ann["images"]}
    return {names[a["image_id"]] for a in ann["annotations"]
            if a["category_id"] == person and a["bbox"][3] >= min_height}


def per_analyser(analyser, paths: list[Path]) -> tuple[dict[str, list[float]], list[float]]:
    """ms per image per analyser and for the whole analysis (all three tasks)."""
    per: dict[str, list[float]] = defaultdict(list)
    whole = []
    analyser.analyse(Image.open(paths[0]).convert("RGB"), ["describe", "sensitive", "labels"])  # warm-up
    for p in paths:
        a = analyser.analyse(Image.open(p).convert("RGB"), ["describe", "sensitive", "labels"])
        for k, v in a.timings_ms.items():
            per[k].append(v)
        whole.append(a.elapsed_ms)
    return per, whole


def indexing_ms(settings, paths: list[Path], work: Path) -> tuple[float, float]:
    """The indexing pipeline's ms per image on `paths` (detect, tag, embed, describe, write; OCR apart), and OCR's."""
    from clip_embedder.db.store import Store
    from clip_embedder.indexing.pipeline import Indexer
    from clip_embedder.models.detector import load_detector
    from clip_embedder.models.embedders import create_embedder

    s = settings.model_copy(update={"ocr": "rapidocr", "pgdata_dir": work / "pg", "faiss_dir": work / "faiss"})
    store = Store.open(s)
    try:
        embedders = {n: create_embedder(n, s).load() for n in s.spaces}
        for e in embedders.values():
            store.spaces.ensure(e.identity)
        stats = Indexer.from_settings(s, store, load_detector(s), embedders).run(
            [(p, None) for p in paths], batch_size=16, progress=False)
    finally:
        store.close()
    ocr = stats.timings.get("ocr", 0.0)
    total = sum(v for k, v in stats.timings.items() if k in ("read", "decode", "detect", "crop", "tag", "embed",
                                                           "describe", "write", "plan", "ocr"))
    return (total - ocr) * 1000 / len(paths), ocr * 1000 / len(paths)


def faces_report(paths: list[Path]) -> None:
    from clip_embedder.analysis.faces import BlazeFaceDetector

    people = person_images()
    coco = [p for p in paths if p.parent.name != "photos"]
    for variant in ("full", "short"):
        det = BlazeFaceDetector(variant, FACES).load()
        found = {p.name for p in coco if det.detect(Image.open(p).convert("RGB"))}
        nine = {p.name: len(det.detect(Image.open(p).convert("RGB"))) for p in sorted(PHOTOS.glob("*.jpg"))}
        false = {n: k for n, k in nine.items() if k and n != "grace_hopper.jpg"}
        print(f"  {variant:5s}: faces in {len(found)} of 128 COCO128 images; {len(people)} have a person >= 64 px "
              f"tall, {len(found & people)} of them with a face found, {len(found - people)} images with a face "
              f"but no such person; nine photos: grace_hopper {nine['grace_hopper.jpg']} face(s), false faces {false}")


def personal_report(analyser, paths: list[Path], work: Path) -> None:
    from clip_embedder.analysis.personal_data import KINDS

    ocr, pii = analyser.models.ocr, analyser.models.personal_data
    backgrounds = [p for p in paths if p.parent.name != "photos"]
    hits = total = wrong = 0
    missed: list[str] = []
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    n = 0
    for kind, (en, ko, values) in FINDINGS.items():
        for i, value in enumerate(values):
            label, font = (en, FONTS["en"]) if i % 2 == 0 else (ko, FONTS["ko"])
            dest = work / f"pii_{n}.jpg"
            render(backgrounds[n % len(backgrounds)], f"{label} {value}", font, dest)
            n += 1
            found = pii.find(ocr.read(Image.open(dest).convert("RGB")))
            ok = any(f.kind == kind for f in found)
            hits += ok
            by_kind[kind][0] += ok
            by_kind[kind][1] += 1
            wrong += sum(1 for f in found if f.kind != kind)
            total += len(found)
            if not ok:
                missed.append(f"{label} {value} → {[(f.kind, f.text) for f in found]}")
    print(f"  rendered: {n} findings, recall {hits / n:.2f}, precision {(total - wrong) / max(total, 1):.2f} "
          f"({total - wrong} right of {total} reported)")
    print("  per kind (found/rendered): " + ", ".join(f"{KINDS[k]} {v[0]}/{v[1]}" for k, v in by_kind.items()))
    for m in missed:
        print(f"    missed: {m}")
    false = [(p.name, f.kind, f.text) for p in paths for f in pii.find(ocr.read(Image.open(p).convert("RGB")))]
    print(f"  false findings in the text of the 137 photos themselves: {len(false)} {false[:5]}")


def main() -> int:
    from clip_embedder.analysis.local import LocalAnalyser

    paths = sorted((COCO / "images").glob("*.jpg")) + sorted(PHOTOS.glob("*.jpg"))
    print(f"# bench_analysis — {machine()}\n# {len(paths)} images: COCO128 + the nine photos")
    work = Path(tempfile.mkdtemp(prefix="bench_analysis_"))
    settings = bench_settings(work, "mobilenet,text", None, None).model_copy(
        update={"ocr": "rapidocr", "face_weights_dir": FACES})
    t = time.perf_counter()
    analyser = LocalAnalyser.from_settings(settings).load()
    print(f"\n## 1. cost (models loaded in {time.perf_counter() - t:.1f} s)")
    per, whole = per_analyser(analyser, paths)
    for k, v in per.items():
        print(f"  {k:14s} p50 {pct(v, 50):7.1f} ms  p99 {pct(v, 99):7.1f} ms  mean {sum(v) / len(v):7.1f} ms")
    print(f"  {'whole':14s} p50 {pct(whole, 50):7.1f} ms  p99 {pct(whole, 99):7.1f} ms  mean "
          f"{sum(whole) / len(whole):7.1f} ms")
    index_ms, ocr_ms = indexing_ms(settings, paths, work)
    as_job = sum(whole) / len(whole) - sum(per["ocr"]) / len(per["ocr"])  # the job reuses the enrichment's OCR
    print(f"  indexing {index_ms:.1f} ms/img + OCR job {ocr_ms:.1f} ms/img; the analysis job (OCR reused) "
          f"{as_job:.1f} ms/img = {as_job / (index_ms + ocr_ms + as_job):.0%} of an image's total processing")
    print("\n## 2. faces")
    faces_report(paths)
    print("\n## 3. nudity")
    nud = analyser.models.nudity
    scores = [(nud.score(Image.open(p).convert("RGB")), p.name) for p in paths]
    regions = [(r.score, r.label, p.name) for p in paths for r in nud.all_regions(Image.open(p).convert("RGB"))]
    top = max(scores)
    reg = max(regions) if regions else (0.0, "-", "-")
    print(f"  open_nsfw: highest {top[0]:.3f} ({top[1]}), floor {nud.floor}; NudeNet exposed parts: highest "
          f"{reg[0]:.3f} ({reg[1]}, {reg[2]}), floor {nud.region_floor}; false verdicts: "
          f"{sum(s >= nud.floor for s, _ in scores) + sum(r[0] >= nud.region_floor for r in regions)}")
    print("\n## 4. personal data")
    personal_report(analyser, paths, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
