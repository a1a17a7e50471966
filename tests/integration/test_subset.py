"""scripts/extract_coco_subset.py against the real COCO128 annotation file."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import ANNOTATIONS, IMAGES, extract_coco_subset

ecs = extract_coco_subset()


def expected_counts(classes: list[str]) -> tuple[set[int], dict[str, int]]:
    """Independent count from the annotation file: selected image ids and non-crowd boxes per class."""
    d = json.loads(ANNOTATIONS.read_text())
    cat = {c["id"]: c["name"] for c in d["categories"]}
    ids, per = set(), {c: 0 for c in classes}
    for a in d["annotations"]:
        name = cat[a["category_id"]]
        if name in classes and not a["iscrowd"]:
            ids.add(a["image_id"])
            per[name] += 1
    return ids, per


def test_counts_match_annotations(subset):
    m = json.loads((subset / "manifest.json").read_text())
    ids, per = expected_counts(ecs.DEFAULT_CLASSES)
    assert sum(c["images"] for c in m["counts"].values()) == len(ids) == 74
    for name, n in per.items():
        assert sum(c["per_class"][name] for c in m["counts"].values()) == n, name
    assert per["person"] == 254 and per["handbag"] == 19  # 259 person boxes of which 5 crowd
    # splits are disjoint and cover the selection; label files agree with the counts
    seen = set()
    for split, c in m["counts"].items():
        files = {f["coco_id"] for f in m["files"][split]}
        assert not files & seen
        seen |= files
        lines = sum(len(p.read_text().splitlines()) for p in (subset / split / "labels").glob("*.txt"))
        assert lines == c["boxes"]
        assert len(list((subset / split / "images").glob("*.jpg"))) == c["images"]
    assert seen == ids
    assert [c["images"] for c in m["counts"].values()] == [52, 11, 11]


def test_yolo_labels_and_yaml(subset):
    import yaml

    y = yaml.safe_load((subset / "coco_subset.yaml").read_text())
    assert y["nc"] == 7 and y["names"] == ecs.DEFAULT_CLASSES and (subset / y["train"]).is_dir()
    for p in (subset / "train" / "labels").glob("*.txt"):
        for line in p.read_text().splitlines():
            cls, *xywh = line.split()
            assert 0 <= int(cls) < 7 and all(0.0 <= float(v) <= 1.0 for v in xywh)
    coco = json.loads((subset / "annotations" / "instances_test.json").read_text())
    assert {c["name"] for c in coco["categories"]} == set(ecs.DEFAULT_CLASSES)


def test_same_inputs_same_version_and_new_config_next_version(subset, tmp_path):
    out = subset.parent
    before = (subset / "manifest.json").stat().st_mtime_ns
    again = ecs.build(str(ANNOTATIONS), str(IMAGES), out, ecs.DEFAULT_CLASSES, (0.7, 0.15, 0.15), 0, None,
                      tmp_path / "cache", progress=False)
    assert again == subset and (subset / "manifest.json").stat().st_mtime_ns == before
    other = ecs.build(str(ANNOTATIONS), str(IMAGES), out, ecs.DEFAULT_CLASSES, (0.7, 0.15, 0.15), 1, None,
                      tmp_path / "cache", progress=False)
    assert other.name == f"version_{int(subset.name.split('_')[1]) + 1}"
    a = json.loads((subset / "manifest.json").read_text())["files"]
    b = json.loads((other / "manifest.json").read_text())["files"]
    assert a["test"] != b["test"]  # another seed, another split
    shutil.rmtree(other)




def test_zip_sources(tmp_path):
    import zipfile

    ann_zip = tmp_path / "ann.zip"
    with zipfile.ZipFile(ann_zip, "w") as z:
        z.write(ANNOTATIONS, "annotations/instances_train2017.json")
    img_zip = tmp_path / "imgs.zip"
    with zipfile.ZipFile(img_zip, "w") as z:
        for p in sorted(IMAGES.glob("*.jpg")):
            z.write(p, f"train2017/{p.name}")
    out = ecs.build(str(ann_zip), str(img_zip), tmp_path / "out", ["laptop", "sports ball"], (0.5, 0.25, 0.25), 0,
                    None, tmp_path / "cache", progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert sum(c["per_class"]["sports ball"] for c in m["counts"].values()) == 6
    assert sum(c["images"] for c in m["counts"].values()) == 8


@pytest.mark.parametrize("problem", ["unknown class", "bad json", "missing image", "bad ratios"])
def test_clear_errors(problem, tmp_path):
    ann, images, classes, ratios = str(ANNOTATIONS), str(IMAGES), ["person", "car"], (0.7, 0.15, 0.15)
    if problem == "unknown class":
        classes, match = ["persn"], "unknown class name.*'persn'.*did you mean 'person'"
    elif problem == "bad json":
        (tmp_path / "bad.json").write_text('{"images": [')
        ann, match = str(tmp_path / "bad.json"), "not valid JSON"
    elif problem == "missing image":
        (tmp_path / "imgs").mkdir()
        for p in sorted(IMAGES.glob("*.jpg"))[1:]:
            (tmp_path / "imgs" / p.name).symlink_to(p)
        images, match = str(tmp_path / "imgs"), "1 selected image.*000000000009.jpg"
        classes = ["bowl"]
    else:
        ratios, match = (0.7, 0.2, 0.2), "summing to 1"
    with pytest.raises(ecs.SubsetError, match=match):
        ecs.build(ann, images, tmp_path / "out", classes, ratios, 0, None, tmp_path / "cache", progress=False)
    assert not list((tmp_path / "out").glob("version_*")) if (tmp_path / "out").exists() else True


def test_url_sources_download_once(tmp_path):
    """The official-source code path (annotations and per-image downloads over HTTP) against a local server."""
    import functools
    import http.server
    import threading

    from tests.helpers import COCO128

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(COCO128))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        out = ecs.build(f"{base}/annotations/instances_coco128_train2017.json", f"{base}/images/", tmp_path / "out",
                        ["laptop"], (0.5, 0.5, 0.0), 0, None, tmp_path / "cache", progress=False)
        m = json.loads((out / "manifest.json").read_text())
        assert sum(c["images"] for c in m["counts"].values()) == 2
        assert len(list((tmp_path / "cache" / "images").glob("*.jpg"))) == 2  # only the selected images
        with pytest.raises(ecs.SubsetError, match="not found"):  # a 404 names the missing image
            ecs.build(f"{base}/annotations/instances_coco128_train2017.json", f"{base}/nowhere/", tmp_path / "o2",
                      ["laptop"], (0.5, 0.5, 0.0), 0, None, tmp_path / "cache2", progress=False)
    finally:
        server.shutdown()
