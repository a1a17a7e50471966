"""Per-embedding throughput against clip-retrieval's `inference`, same ViT-B/32, same images, side by side.

clip-retrieval runs in its own virtual environment (`--clip-retrieval-python`, e.g. made with
`python3 -m venv /tmp/crvenv && /tmp/crvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 clip-retrieval`):
its own reader (`FilesReader`: a torch DataLoader with `--workers` preprocessing workers) and mapper
(`ClipMapper`: OpenCLIP through all_clip, torch) over a folder of the first `--images` COCO128 images, timed from
the first batch requested to the last embedding (model loading excluded, as clip-retrieval's
`sample_per_sec_no_initial_load` excludes it). This project: `ClipEmbedder.embed_images` on the same files
(read, decoded, preprocessed by the model's own transform, embedded), torch and ONNX Runtime (`CLIP_RUNTIME`).
Both load the same checkpoint: ViT-B/32 with seeded random weights (no CLIP weights offline; the architecture
sets the cost), saved once and loaded through OpenCLIP's loader on both sides.

    python benchmarks/bench_clip_retrieval.py --clip-retrieval-python /tmp/crvenv/bin/python [--images 128]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import SHARED, machine

THEIRS = r'''
import json, sys, time
from clip_retrieval.clip_inference.mapper import ClipMapper
from clip_retrieval.clip_inference.reader import FilesReader
folder, ckpt, bs, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mapper = ClipMapper(enable_image=True, enable_text=False, enable_metadata=False, use_mclip=False,
                    clip_model=f"open_clip:ViT-B-32/{ckpt}", use_jit=False, mclip_model=None, warmup_batch_size=bs)
from all_clip import load_clip
_, preprocess, tokenizer = load_clip(clip_model=f"open_clip:ViT-B-32/{ckpt}", use_jit=False, warmup_batch_size=1)
reader = FilesReader(lambda x: x, preprocess, tokenizer, folder, bs, workers, enable_text=False, enable_image=True)
t = time.perf_counter()
n = 0
for batch in reader:
    out = mapper(batch)
    n += len(out["image_embs"])
print(json.dumps({"n": n, "seconds": time.perf_counter() - t}))
'''


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip-retrieval-python", type=Path, required=True,
                   help="the python of a virtual environment with clip-retrieval installed")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="clip-retrieval's preprocessing workers")
    args = p.parse_args()
    import open_clip
    import torch

    from clip_embedder.models.clip import ClipEmbedder

    work = Path(tempfile.mkdtemp(prefix="bench_clip_retrieval_"))
    folder = work / "images"
    folder.mkdir()
    files = sorted((SHARED / "datasets" / "coco128" / "images").glob("*.jpg"))[: args.images]
    for f in files:
        shutil.copy(f, folder / f.name)
    torch.manual_seed(0)
    ckpt = work / "vit_b_32_random.pt"
    torch.save({"state_dict": open_clip.create_model("ViT-B-32", pretrained=None).state_dict()}, ckpt)
    print(f"machine: {machine()}\nViT-B/32 (random weights), {len(files)} COCO128 images, batches of "
          f"{args.batch_size}; model loading excluded on both sides")
    r = subprocess.run([str(args.clip_retrieval_python), "-c", THEIRS, str(folder), str(ckpt), str(args.batch_size),
                        str(args.workers)], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"clip-retrieval failed:\n{r.stderr[-2000:]}")
    theirs = json.loads(r.stdout.strip().splitlines()[-1])
    theirs_rate = theirs["n"] / theirs["seconds"]
    print(f"  clip-retrieval inference ({args.workers} DataLoader workers, torch): {theirs_rate:6.2f} images/s "
          f"({theirs['n']} in {theirs['seconds']:.1f}s)")
    for runtime in ("torch", "onnx"):
        emb = ClipEmbedder("ViT-B-32", str(ckpt), runtime=runtime, export_dir=work / "exported").load()
        emb.embed_images([Image.open(files[0]).convert("RGB")])
        t = time.perf_counter()
        vecs = [emb.embed_images([Image.open(f).convert("RGB") for f in files[i:i + args.batch_size]])
                for i in range(0, len(files), args.batch_size)]
        seconds = time.perf_counter() - t
        rate = len(files) / seconds
        assert np.vstack(vecs).shape == (len(files), 512)
        print(f"  this project, CLIP_RUNTIME={runtime:<5}: {rate:6.2f} images/s ({len(files)} in {seconds:.1f}s) = "
              f"{rate / theirs_rate:.2f}x clip-retrieval")


if __name__ == "__main__":
    main()
