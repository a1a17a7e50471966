"""The serving image has no torch: the detector and the text space run from their ONNX exports alone.

A child Python with torch (and every package that needs it) made unimportable loads the exports this process
wrote, and must detect and embed exactly what this process does; without an export it must say how to make one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from PIL import Image

from clip_embedder.models.detector import Detector
from clip_embedder.models.text import TextEmbedder
from tests.helpers import IMAGES, ROOT, YOLO_STATE_DICT

BLOCK = """
import sys
for m in ("torch", "torchvision", "yolov5", "sentence_transformers", "open_clip", "transformers"):
    sys.modules[m] = None  # `import torch` now raises ImportError, as in the serving image
"""

CHILD = """
import json, sys
from PIL import Image
from clip_embedder.models.detector import Detector
from clip_embedder.models.text import TextEmbedder
export_dir, weights, image = sys.argv[1:4]
det = Detector.load(weights, conf=0.15, runtime="auto", export_dir=export_dir, allow_pickle=False)
found = det.detect([Image.open(image)])[0]
text = TextEmbedder(runtime="auto", export_dir=export_dir)
vec = text.embed_texts(["a photo of a dog"])[0]
print(json.dumps({"runtime": det.runtime, "text_runtime": text.runtime, "torch": "torch" in sys.modules and
                  sys.modules["torch"] is not None,
                  "found": [[d.label, d.score, list(d.bbox)] for d in found], "vec": vec.tolist()}))
"""


def run_child(tmp_path, code: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "blocker").mkdir(exist_ok=True)
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocker"), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_exports_serve_without_torch(tmp_path):
    export_dir = tmp_path / "exported"
    image = IMAGES / "000000000009.jpg"
    # this process (torch installed) exports both, and is the reference
    ref = Detector.load(YOLO_STATE_DICT, conf=0.15, runtime="onnx", export_dir=export_dir, allow_pickle=False)
    want = ref.detect([Image.open(image)])[0]
    text = TextEmbedder(runtime="onnx", export_dir=export_dir)
    want_vec = text.embed_texts(["a photo of a dog"])[0]
    assert want and text.runtime == "onnx"

    out = run_child(tmp_path, CHILD, str(export_dir), str(YOLO_STATE_DICT), str(image))
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] is False and got["runtime"] == "onnx" and got["text_runtime"] == "onnx"
    assert got["found"] == [[d.label, d.score, list(d.bbox)] for d in want]
    assert max(abs(a - b) for a, b in zip(got["vec"], want_vec.tolist())) < 1e-5


def test_without_an_export_the_error_says_how_to_make_one(tmp_path):
    out = run_child(tmp_path, CHILD, str(tmp_path / "empty"), str(YOLO_STATE_DICT), str(IMAGES / "000000000009.jpg"))
    assert out.returncode != 0
    assert "torch is not installed" in out.stderr and "export_models" in out.stderr
