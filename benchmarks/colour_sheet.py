"""Colour queries ("a red car") over COCO128 + the photos indexed with the 80-class detector: how many confident
answers each gets, and a contact sheet of the objects they show, to judge by eye (COCO has no colour annotations).

    python benchmarks/colour_sheet.py [--work DIR] [--out sheet.png]

--work reuses the index of `bench_queries.py --detector coco80 --work DIR`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_queries  # noqa: E402

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--work", type=Path, default=Path("/tmp/bq80c"))
p.add_argument("--out", type=Path, default=Path("colour_sheet.png"))
args = p.parse_args()
run = bench_queries.index(args.work, "coco80")
svc = run.service()
queries = ["a red car", "a white car", "a black car", "a yellow bus", "a red bus", "a white bus", "a black dog",
           "a brown dog", "a white dog", "a black cat", "a white cat", "a green traffic light", "a red umbrella",
           "a blue umbrella", "a yellow kite", "a red kite", "a white boat", "a red parrot", "a white airplane",
           "a brown horse", "a white horse", "a yellow banana", "a green broccoli", "an orange orange", "a red truck"]
lib = args.work / "library"
tiles = []
for q in queries:
    ans = svc.search_text(q, top_k=6)
    conf = [h for h in ans.hits if not h.weak]
    print(f"{q!r:26} confident {len(conf):2d}  warnings {ans.warnings}")
    row = []
    for h in conf[:6]:
        im = Image.open(lib / h.file_name).convert("RGB")
        x1, y1, x2, y2 = h.bbox
        row.append(im.crop((x1, y1, x2, y2)).resize((96, 96)))
    tiles.append((q, row))
W = 180 + 6 * 100
sheet = Image.new("RGB", (W, 100 * len(tiles)), "white")
d = ImageDraw.Draw(sheet)
for r, (q, row) in enumerate(tiles):
    d.text((4, r * 100 + 40), q, fill="black")
    for c, t in enumerate(row):
        sheet.paste(t, (180 + c * 100, r * 100 + 2))
sheet.save(args.out)
print(f"contact sheet: {args.out}")
