"""The indexing CLI end to end on a small folder of real images (embedded Postgres, real weights)."""
from __future__ import annotations

import shutil
import subprocess
import sys

from tests.helpers import IMAGENET_LABELS, IMAGES, MOBILENET, ROOT, TAGGER_HEAD, YOLO_STATE_DICT, YOLO_WEIGHTS


def test_embed_and_index_cli(tmp_path, monkeypatch, capsys):
    from clip_embedder.scripts import embed_and_index

    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(IMAGES.glob("*.jpg"))[:5]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes((IMAGES / "000000000009.jpg").read_bytes()[:3000])
    (folder / "notes.txt").write_text("not an image, not listed")
    for k, v in {"PGDATA_DIR": tmp_path / "pg", "FAISS_DIR": tmp_path / "faiss", "DETECTOR_WEIGHTS": YOLO_WEIGHTS,
                 "MOBILENET_WEIGHTS": MOBILENET, "SPACES": "mobilenet,text", "DATABASE_URL": "",
                 "TAGGER_WEIGHTS": TAGGER_HEAD, "TAGGER_LABELS": IMAGENET_LABELS, "OCR": "rapidocr",
                 "MAX_UPLOAD_BYTES": 1000}.items():  # the upload cap does not apply to indexing
        monkeypatch.setenv(k, str(v))
    monkeypatch.chdir(tmp_path)
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress", "--device", "0"]) == 0
    out = capsys.readouterr()
    assert "images=6 indexed=5 skipped=0 updated=0 redetected=0 reenriched=0 failed=1" in out.out
    assert "images/s=" in out.out and "detect=" in out.out and "tag=" in out.out and "ocr=" in out.out
    assert "broken.jpg" in out.err
    # OCR switched off: the images are re-described (their text dropped), not detected again
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress", "--ocr", "off"]) == 0
    assert "indexed=0 skipped=0 updated=0 redetected=0 reenriched=5" in capsys.readouterr().out
    assert (tmp_path / "faiss" / "mobilenet.faiss").exists()
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress", "--ocr", "off"]) == 0
    assert "indexed=0 skipped=5" in capsys.readouterr().out
    monkeypatch.setenv("OCR", "off")
    # another detector file (same weights, another sha256): kept unless --redetect, then replaced once
    monkeypatch.setenv("DETECTOR_WEIGHTS", str(YOLO_STATE_DICT))
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress"]) == 0
    assert "skipped=5 updated=0 redetected=0" in capsys.readouterr().out
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress", "--redetect"]) == 0
    out = capsys.readouterr().out
    assert "indexed=0 skipped=0 updated=0 redetected=5 reenriched=0 failed=1" in out
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress", "--redetect"]) == 0
    assert "skipped=5 updated=0 redetected=0" in capsys.readouterr().out
    # a missing model file is refused with a clear message
    monkeypatch.setenv("MOBILENET_WEIGHTS", str(tmp_path / "missing.tflite"))
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress"]) == 2
    assert "MOBILENET_WEIGHTS" in capsys.readouterr().err
    assert embed_and_index.main(["--dataset_path", str(tmp_path / "nowhere")]) == 2


def test_help_texts():
    cmds = [["-m", "clip_embedder.scripts.embed_and_index"], ["-m", "clip_embedder.scripts.fetch_assets"],
            [str(ROOT / "scripts" / "extract_coco_subset.py")]]
    cmds += [[str(ROOT / "yolov5" / f)] for f in ("train_mlflow.py", "evaluate.py", "baseline.py", "promote.py",
                                                          "operating_points.py")]
    for cmd in cmds:
        r = subprocess.run([sys.executable, *cmd, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 0 and "Example" in r.stdout, (cmd, r.stderr[-500:])
