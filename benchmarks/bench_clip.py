"""CLIP per-embedding throughput: the image and text towers on torch against ONNX Runtime (CLIP_RUNTIME).

ViT-B/32 with seeded random weights (no CLIP weights offline; the architecture, not the weights, sets the cost),
saved as a checkpoint and loaded through OpenCLIP's own loader as the service loads it; the same COCO128 images
(whole images, preprocessed by the model's transform) and the same texts, in batches, side by side in one run.

    python benchmarks/bench_clip.py [--images 128] [--batch-size 32] [--model ViT-B-32]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import SHARED, machine, peak_rss_mb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--model", default="ViT-B-32")
    args = p.parse_args()
    import open_clip
    import torch

    from clip_embedder.models.clip import ClipEmbedder

    work = Path(tempfile.mkdtemp(prefix="bench_clip_"))
    torch.manual_seed(0)
    ckpt = work / "random.pt"
    torch.save({"state_dict": open_clip.create_model(args.model, pretrained=None).state_dict()}, ckpt)
    files = sorted((SHARED / "datasets" / "coco128" / "images").glob("*.jpg"))[: args.images]
    images = [Image.open(f).convert("RGB") for f in files]
    texts = [f"a photo of {w}" for w in ("a dog", "two cats", "a red bus", "a person on a bench")] * 32
    print(f"machine: {machine()}\n{args.model} (random weights), {len(images)} COCO128 images, {len(texts)} texts, "
          f"batches of {args.batch_size}")
    rates = {}
    for runtime in ("torch", "onnx"):
        emb = ClipEmbedder(args.model, str(ckpt), runtime=runtime, export_dir=work / "exported").load()
        emb.embed_images(images[:2])
        emb.embed_texts(texts[:2])
        bs = args.batch_size
        t = time.perf_counter()
        vi = np.vstack([emb.embed_images(images[i:i + bs]) for i in range(0, len(images), bs)])
        ti = time.perf_counter() - t
        t = time.perf_counter()
        vt = np.vstack([emb.embed_texts(texts[i:i + bs]) for i in range(0, len(texts), bs)])
        tt = time.perf_counter() - t
        rates[runtime] = (len(images) / ti, len(texts) / tt, vi, vt)
        print(f"  {runtime:<5} images {len(images) / ti:7.1f}/s ({ti / len(images) * 1000:.1f} ms each)   "
              f"texts {len(texts) / tt:7.1f}/s ({tt / len(texts) * 1000:.1f} ms each)")
    (ri, rt, vi, vt), (oi, ot, wi, wt) = rates["torch"], rates["onnx"]
    print(f"ONNX Runtime vs torch: images {oi / ri:.2f}x, texts {ot / rt:.2f}x; min cosine to torch: images "
          f"{(vi * wi).sum(1).min():.5f}, texts {(vt * wt).sum(1).min():.5f}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
