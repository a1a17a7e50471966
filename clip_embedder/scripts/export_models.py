"""Export every model the service runs to ONNX, once, into EXPORT_DIR — so a machine without torch can serve.

The serving image (API, workers, page) has no torch: the detector, MiniLM (the `text` space) and the other
embedders run from their ONNX exports, keyed by their weights' sha256 in EXPORT_DIR. This needs the `train`
extra (torch, yolov5, sentence-transformers) and runs where it is installed: the compose `init` step, or
`make install` machines. Run it again after a new detector becomes the champion (MODEL_URI's alias moved).

Examples:
    python -m clip_embedder.scripts.export_models                    # the models the settings name
    MODEL_URI=models:/coco-subset-yolov5@champion python -m clip_embedder.scripts.export_models
"""
from __future__ import annotations

import argparse
import sys
import time

from PIL import Image


def main(argv: list[str] | None = None) -> int:
    """Load (and so export) the detector and each space of SPACES with ONNX runtimes; print what is where.

    Returns 0, or 2 when a model cannot be loaded (the reason printed)."""
    p = argparse.ArgumentParser(prog="python -m clip_embedder.scripts.export_models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args(argv)
    from clip_embedder.config import Settings  # noqa: PLC0415
    from clip_embedder.models.detector import load_detector  # noqa: PLC0415
    from clip_embedder.models.embedders import create_embedder  # noqa: PLC0415

    settings = Settings(detector_runtime="onnx", text_runtime="onnx")
    try:
        t0 = time.perf_counter()
        detector = load_detector(settings)
        print(f"detector: {detector.source} → {detector.export_paths(settings.export_dir, detector.weights_sha256)[0]}"
              f" ({time.perf_counter() - t0:.1f} s)")
        blank = Image.new("RGB", (64, 64))
        for space in settings.spaces:
            t0 = time.perf_counter()
            embedder = create_embedder(space, settings)
            if embedder.supports_text_queries:
                embedder.embed_texts(["a photo of a dog"])
            if space != "text":
                embedder.embed_images([blank])
            print(f"{space}: {embedder.identity.describe()} runtime {getattr(embedder, 'runtime', '?')}"
                  f" ({time.perf_counter() - t0:.1f} s)")
    except (OSError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
