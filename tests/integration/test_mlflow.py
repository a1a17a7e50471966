"""Training, evaluation, the model registry and serving weights from MLflow — real runs, real stores.

A real (1-epoch, 160 px, 10-image) yolov5 training run goes into a temporary SQLite MLflow store;
the API is started with that run's URI; artifacts also round-trip through a local GCS emulator.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ANNOTATIONS, IMAGES, YOLO_WEIGHTS, extract_coco_subset, free_port, yolov5_script

MODEL = "test-detector"


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    import mlflow

    from clip_embedder.models.mlflow_registry import configure_mlflow

    d = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{d}/mlflow.db"
    configure_mlflow(uri)
    mlflow.create_experiment("t", artifact_location=str(d / "artifacts"))
    return uri


@pytest.fixture(scope="module")
def tiny_subset(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    ecs = extract_coco_subset()
    return ecs.build(str(ANNOTATIONS), str(IMAGES), d / "coco_subset", ["person", "car", "handbag"], (0.6, 0.2, 0.2),
                     0, 16, d / "cache", progress=False)


@pytest.fixture(scope="module")
def trained(mlflow_store, tiny_subset, tmp_path_factory):
    import mlflow
    train_mlflow = yolov5_script("train_mlflow")

    project = tmp_path_factory.mktemp("runs")
    rc = train_mlflow.main(["--imgsz", "160", "--batch-size", "8", "--epochs", "2", "--weights", str(YOLO_WEIGHTS),
                            "--project", str(project), "--name", "t", "--device", "0", "--experiment", "t",
                            "--coco_subset_data_version", tiny_subset.name, "--datasets-root", str(tiny_subset.parent),
                            "--registered-model-name", MODEL, "--workers", "0", "--tracking-uri", mlflow_store])
    assert rc == 0
    runs = mlflow.search_runs(experiment_names=["t"], filter_string="tags.task = 'train'", output_format="list")
    assert len(runs) == 1
    return runs[0]


def artifact_paths(run_id: str, path: str | None = None) -> set[str]:
    from mlflow import MlflowClient

    out = set()
    for a in MlflowClient().list_artifacts(run_id, path):
        out |= artifact_paths(run_id, a.path) if a.is_dir else {a.path}
    return out


def test_training_run_is_fully_logged(trained, tiny_subset):
    from mlflow import MlflowClient

    from clip_embedder.models.detector import file_sha256

    run, client = trained, MlflowClient()
    assert run.data.params["epochs"] == "2" and run.data.params["imgsz"] == "160"
    assert run.data.params["noautoanchor"] == "True"  # the pretrained anchors are kept
    assert {"hyp.lr0", "hyp.momentum", "hyp.mosaic"} <= set(run.data.params)
    assert run.data.tags["dataset_version"] == tiny_subset.name
    assert run.data.tags["dataset_manifest_sha256"] == file_sha256(tiny_subset / "manifest.json")
    assert len(run.data.tags["git_commit"]) >= 7 and "sys.torch" in run.data.tags
    for key in ("train/box_loss", "val/precision", "val/recall", "val/mAP50", "val/mAP50-95"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1], key
    assert 0 <= run.data.metrics["best/mAP50-95"] <= 1
    arts = artifact_paths(run.info.run_id)
    assert {"weights/best.pt", "weights/last.pt", "results.csv", "dataset/manifest.json",
            "plots/PR_curve.png", "plots/confusion_matrix.png", "plots/labels.jpg"} <= arts
    mv = client.get_model_version_by_alias(MODEL, "champion")
    assert mv.run_id == run.info.run_id


def test_evaluate_logs_per_class_ap_linked_to_training(trained, tiny_subset, tmp_path):
    evaluate = yolov5_script("evaluate")
    import mlflow

    rc = evaluate.main(["--weights", f"models:/{MODEL}@champion", "--coco_subset_data_version", tiny_subset.name,
                        "--datasets-root", str(tiny_subset.parent), "--task", "test", "--imgsz", "160",
                        "--project", str(tmp_path), "--experiment", "t", "--workers", "0"])
    assert rc == 0
    runs = mlflow.search_runs(experiment_names=["t"], filter_string="tags.task = 'evaluate/test'",
                              output_format="list")
    r = runs[0]
    assert r.data.tags["training_run_id"] == trained.info.run_id
    assert {"test/mAP50", "test/mAP50-95", "speed/inference_ms"} <= set(r.data.metrics)
    assert any(k.startswith("test/AP50-95/") for k in r.data.metrics)
    assert {"per_class_ap.csv", "plots/confusion_matrix.png"} <= artifact_paths(r.info.run_id)


def test_operating_points_are_one_run_with_a_table_and_a_plot(trained, tiny_subset):
    """Accuracy at two input sizes (yolov5 val) and the serving path's latency on two runtimes, in one MLflow
    run; a larger input is slower on each runtime."""
    import csv

    import mlflow

    op = yolov5_script("operating_points")
    rc = op.main(["--weights", f"models:/{MODEL}@champion", "--coco_subset_data_version", tiny_subset.name,
                  "--datasets-root", str(tiny_subset.parent), "--task", "test", "--imgsz", "160,640",
                  "--runtimes", "torch,onnx", "--images", "3", "--experiment", "t"])
    assert rc == 0
    r = mlflow.search_runs(experiment_names=["t"], filter_string="tags.task = 'operating_points/test'",
                           output_format="list")[0]
    m = r.data.metrics
    assert {f"op/{sz}/{k}" for sz in (160, 640) for k in ("mAP50-95", "mAP50", "torch/ms_per_image",
                                                          "onnx/ms_per_image")} <= set(m)
    assert all(m[f"op/640/{rt}/ms_per_image"] > m[f"op/160/{rt}/ms_per_image"] for rt in ("torch", "onnx"))
    assert r.data.tags["training_run_id"] == trained.info.run_id
    assert {"operating_points.csv", "operating_points.png"} <= artifact_paths(r.info.run_id)
    rows = list(csv.DictReader(open(mlflow.artifacts.download_artifacts(run_id=r.info.run_id,
                                                                         artifact_path="operating_points.csv"))))
    assert len(rows) == 4 and {row["runtime"] for row in rows} == {"torch", "onnx"}


def test_promotion_only_when_better(trained, tmp_path):
    import mlflow
    promote = yolov5_script("promote")
    from mlflow import MlflowClient

    client = MlflowClient()
    before = client.get_model_version_by_alias(MODEL, "champion").version
    version, moved = promote.register_and_promote(trained.info.run_id, MODEL, "champion", "best/mAP50-95")
    assert not moved and client.get_model_version_by_alias(MODEL, "champion").version == before  # a tie stays
    best = tmp_path / "weights" / "best.pt"
    best.parent.mkdir()
    best.write_bytes(b"weights")
    exp = mlflow.get_experiment_by_name("t").experiment_id
    for score in (0.0, 1.0):  # a worse run stays out; a better one takes the alias
        with mlflow.start_run(experiment_id=exp) as r:
            mlflow.log_artifact(str(best), artifact_path="weights")
            mlflow.log_metric("best/mAP50-95", score)
        version, moved = promote.register_and_promote(r.info.run_id, MODEL, "champion", "best/mAP50-95")
        assert moved == (score == 1.0)
        assert (str(client.get_model_version_by_alias(MODEL, "champion").version) == version) == moved
    promote.register_and_promote(trained.info.run_id, MODEL, "champion", "best/mAP50-95", force=True)
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == trained.info.run_id


def test_api_serves_the_weights_of_a_run(trained, mlflow_store, settings, indexed, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from api.main import create_app

    monkeypatch.chdir(tmp_path)  # models/mlflow/ lands here
    s = settings.model_copy(update={"model_uri": f"models:/{MODEL}@champion", "mlflow_tracking_uri": mlflow_store})
    with TestClient(create_app(s)) as c:
        h = c.get("/api/health").json()
        src = h["detector"]["source"]
        assert src["run_id"] == trained.info.run_id and src["model_name"] == MODEL and src["model_version"]
        assert "best/mAP50-95" in src["metrics"] and h["detector"]["classes"] == 3
        r = c.post("/api/search_image", files={"file": ("q.jpg", (IMAGES / "000000000036.jpg").read_bytes(),
                                                       "image/jpeg")})
        assert r.status_code == 200 and all(o["label"] in {"person", "car", "handbag"} for o in r.json()["objects"])
    cached = tmp_path / "models" / "mlflow" / trained.info.run_id / "best.pt"
    mtime = cached.stat().st_mtime_ns
    from clip_embedder.models.mlflow_registry import fetch_detector_weights

    assert fetch_detector_weights(s).path.stat().st_mtime_ns == mtime  # reused while its sha256 matches


@pytest.mark.parametrize("case", ["unknown alias", "run without weights", "unreachable server"])
def test_start_up_errors_are_clear(case, trained, mlflow_store, settings, tmp_path, monkeypatch):
    import mlflow

    from clip_embedder.models.mlflow_registry import fetch_detector_weights

    monkeypatch.chdir(tmp_path)
    if case == "unknown alias":
        s = settings.model_copy(update={"model_uri": f"models:/{MODEL}@nope", "mlflow_tracking_uri": mlflow_store})
        match = "has no alias 'nope'"
    elif case == "run without weights":
        with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("t").experiment_id) as r:
            mlflow.log_param("x", 1)
        s = settings.model_copy(update={"mlflow_run_id": r.info.run_id, "mlflow_tracking_uri": mlflow_store})
        match = "has no weights at 'weights/best.pt'"
    else:
        s = settings.model_copy(update={"model_uri": f"models:/{MODEL}@champion",
                                        "mlflow_tracking_uri": f"http://127.0.0.1:{free_port()}"})
        match = "cannot reach the MLflow tracking server|MLflow cannot resolve"
    try:
        with pytest.raises(RuntimeError, match=match):
            fetch_detector_weights(s)
    finally:
        mlflow.set_tracking_uri(mlflow_store)


def test_gcs_artifacts_through_the_emulator(tmp_path, monkeypatch):
    import mlflow
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
        storage.Client().create_bucket("mlflow-artifacts")
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/gcs.db")
        exp = mlflow.create_experiment("gcs", artifact_location="gs://mlflow-artifacts/exp")
        weights = tmp_path / "best.pt"
        weights.write_bytes(YOLO_WEIGHTS.read_bytes())
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_artifact(str(weights), artifact_path="weights")
        blobs = [b.name for b in storage.Client().list_blobs("mlflow-artifacts")]
        assert any(b.endswith("weights/best.pt") for b in blobs)
        got = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="weights/best.pt",
                                                  dst_path=str(tmp_path / "dl"))
        assert open(got, "rb").read() == weights.read_bytes()
    finally:
        server.stop()


def test_relative_dataset_yaml_is_resolved_against_its_folder(tiny_subset, tmp_path):
    """yolov5 resolves a relative `path:` against its own package folder; the scripts fix it first."""
    mc = yolov5_script("mlflow_common")
    import yaml

    rel = tmp_path / "cfg" / "subset.yaml"
    rel.parent.mkdir()
    d = yaml.safe_load((tiny_subset / "coco_subset.yaml").read_text())
    import os

    d["path"] = os.path.relpath(tiny_subset, rel.parent)
    rel.write_text(yaml.safe_dump(d))
    fixed = mc.materialize_yaml(rel, tmp_path / "out")
    assert Path(yaml.safe_load(fixed.read_text())["path"]) == tiny_subset.resolve()
    manifest, sha = mc.manifest_of(rel)
    assert manifest == tiny_subset / "manifest.json" and len(sha) == 64
    assert mc.resolve_data("x.yaml", tiny_subset.name, tiny_subset.parent) == tiny_subset / "coco_subset.yaml"
    with pytest.raises(FileNotFoundError, match="extract_coco_subset"):
        mc.resolve_data("x.yaml", "version_99", tiny_subset.parent)


def test_weights_from_the_tracking_server_are_never_unpickled(trained, mlflow_store, tmp_path):
    """Training logs a state dict (loads with weights_only=True); a pickle put on the server by someone else
    is refused by the service, with a message saying what to do."""
    import mlflow
    import torch

    from clip_embedder.config import Settings
    from clip_embedder.models.detector import file_sha256, load_detector
    from clip_embedder.models.mlflow_registry import SHA_TAG

    mlflow.set_tracking_uri(mlflow_store)  # another test may have pointed MLflow elsewhere
    got = mlflow.artifacts.download_artifacts(run_id=trained.info.run_id, artifact_path="weights/best.pt",
                                              dst_path=str(tmp_path / "dl"))
    assert isinstance(torch.load(got, weights_only=True)["state_dict"], dict)
    exp = mlflow.get_experiment_by_name("t").experiment_id
    pickled = tmp_path / "weights" / "best.pt"
    pickled.parent.mkdir()
    pickled.write_bytes(YOLO_WEIGHTS.read_bytes())  # a release pickle: unpickling it could run anything
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.set_tag(SHA_TAG, file_sha256(pickled))
        mlflow.log_artifact(str(pickled), artifact_path="weights")
    s = Settings(_env_file=None, model_uri=f"runs:/{run.info.run_id}/weights/best.pt",
                 mlflow_tracking_uri=mlflow_store)
    with pytest.raises(ValueError, match="pickled checkpoint.*state-dict format"):
        load_detector(s)
