"""MLflow: where the detector weights come from when the service is pointed at a run or a registered model.

`MODEL_URI` (`runs:/<run_id>/weights/best.pt`, `models:/<name>@<alias>`, `models:/<name>/<version>`)
or `MLFLOW_RUN_ID` (its `weights/best.pt`) → the file is downloaded once into
`models/mlflow/<run_id>/` and reused while its sha256 matches the `weights_sha256` tag the
training run recorded.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from clip_embedder.config import Settings
from clip_embedder.images import file_sha256

WEIGHTS_ARTIFACT = "weights/best.pt"
SHA_TAG = "weights_sha256"


@dataclass
class FetchedWeights:
    """A local copy of an MLflow run's detector weights and what the health route reports about it."""

    path: Path
    run_id: str
    model_uri: str
    model_name: str | None = None
    model_version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict:
        """What `/api/health` shows: model URI, run id, registry name and version, the run's metrics."""
        return {"model_uri": self.model_uri, "run_id": self.run_id, "model_name": self.model_name,
                "model_version": self.model_version, "metrics": self.metrics}


def configure_mlflow(tracking_uri: str | None = None) -> str:
    """Point MLflow at `tracking_uri` (default: MLFLOW_TRACKING_URI or local `sqlite:///mlflow.db`).

    HTTP retries are capped so an unreachable server fails in seconds, not minutes.
    """
    import mlflow  # noqa: PLC0415

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    if not tracking_uri:
        from clip_embedder.config import get_settings  # noqa: PLC0415

        tracking_uri = get_settings().mlflow_tracking_uri
    uri = tracking_uri
    mlflow.set_tracking_uri(uri)
    return uri


def resolve_model_uri(uri: str) -> tuple[str, str, str | None, str | None]:
    """Map a `runs:/` or `models:/` URI to (run_id, artifact path, model name, model version).

    Raises:
        RuntimeError: unknown model, version or alias; a malformed URI; an unreachable server.
    """
    from mlflow import MlflowClient  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    client = MlflowClient()
    try:
        if uri.startswith("runs:/"):
            rest = uri[len("runs:/"):].strip("/")
            run_id, _, path = rest.partition("/")
            client.get_run(run_id)
            return run_id, path or WEIGHTS_ARTIFACT, None, None
        if uri.startswith("models:/"):
            rest = uri[len("models:/"):].strip("/")
            if "@" in rest:
                name, alias = rest.split("@", 1)
                try:
                    mv = client.get_model_version_by_alias(name, alias)
                except MlflowException as e:
                    aliases = []
                    try:
                        aliases = list(client.get_registered_model(name).aliases)
                    except MlflowException:
                        pass
                    raise RuntimeError(f"registered model {name!r} has no alias {alias!r} "
                                       f"(aliases: {aliases or 'none'}): {e.message}") from e
            else:
                name, _, version = rest.partition("/")
                if not version:
                    raise RuntimeError(f"{uri!r}: give a version or an alias, e.g. models:/{name}@champion")
                mv = client.get_model_version(name, version)
            run_id = str(mv.run_id)
            source = str(mv.source)
            marker = f"/{run_id}/artifacts/"
            path = source.split(marker, 1)[1] if marker in source else WEIGHTS_ARTIFACT.rsplit("/", 1)[0]
            if not path.endswith(".pt"):
                path = path.rstrip("/") + "/best.pt"
            return run_id, path, name, str(mv.version)
    except MlflowException as e:
        raise RuntimeError(f"MLflow cannot resolve {uri!r} at {tracking_uri()}: {e.message}") from e
    except RuntimeError:
        raise
    except Exception as e:  # connection errors surface as requests / OSError subclasses
        raise RuntimeError(f"cannot reach the MLflow tracking server at {tracking_uri()} for {uri!r}: {e}") from e
    raise RuntimeError(f"MODEL_URI {uri!r} must start with runs:/ or models:/")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """For an http(s) tracking server, GET its `/health`; raise RuntimeError when it does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered (a proxy may not route /health)
    except OSError as e:
        raise RuntimeError(f"cannot reach the MLflow tracking server at {uri} (MLFLOW_TRACKING_URI): {e}. Start it "
                           "(make mlflow-ui) or point MLFLOW_TRACKING_URI at a running one.") from e


def tracking_uri() -> str:
    """The tracking URI MLflow uses now (for error messages)."""
    import mlflow  # noqa: PLC0415

    return mlflow.get_tracking_uri()


def fetch_detector_weights(settings: Settings, cache_dir: Path = Path("models/mlflow")) -> FetchedWeights:
    """Download (or reuse) the detector weights named by MODEL_URI / MLFLOW_RUN_ID.

    Raises:
        RuntimeError: the run has no such artifact, the alias/model is unknown, or the server is unreachable.
    """
    import mlflow  # noqa: PLC0415
    from mlflow import MlflowClient  # noqa: PLC0415

    check_reachable(configure_mlflow(settings.mlflow_tracking_uri))
    uri = settings.model_uri or f"runs:/{settings.mlflow_run_id}/{WEIGHTS_ARTIFACT}"
    run_id, artifact, name, version = resolve_model_uri(uri)
    try:
        run = MlflowClient().get_run(run_id)
    except Exception as e:
        raise RuntimeError(f"cannot read MLflow run {run_id} at {tracking_uri()}: {e}") from e
    expected = run.data.tags.get(SHA_TAG)
    local = Path(cache_dir) / run_id / Path(artifact).name
    if not (local.is_file() and expected and file_sha256(local) == expected):
        local.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=local.parent) as tmp:
            try:
                got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp))
            except Exception as e:
                listing = [a.path for a in MlflowClient().list_artifacts(run_id, Path(artifact).parent.as_posix())]
                raise RuntimeError(f"MLflow run {run_id} has no weights at {artifact!r} "
                                   f"(found: {listing or 'nothing'}): {e}") from e
            if expected and file_sha256(got) != expected:
                raise RuntimeError(f"weights of run {run_id} do not match their recorded sha256 {expected[:12]}…")
            shutil.move(str(got), local)
    metrics = {k: round(v, 5) for k, v in run.data.metrics.items() if k.startswith(("best/", "test/", "val/mAP"))}
    return FetchedWeights(local, run_id, uri, name, version, metrics)


def register_and_promote(run_id: str, artifact_dir: str, must_hold: str, name: str, alias: str, metric: str, *,
                         force: bool = False, description: str = "") -> tuple[str, bool]:
    """Create a version of the registered model `name` from `runs:/<run_id>/<artifact_dir>` (the detector's
    `weights`, holding best.pt) and move `alias` to it when the run's `metric` beats the holder's (`promote`).

    Returns:
        (new version number, whether the alias moved).

    Raises:
        RuntimeError: the run has no `metric`, or `artifact_dir` lacks `must_hold`.
    """
    from mlflow import MlflowClient  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    client = MlflowClient()
    run = client.get_run(run_id)
    if not any(a.path == f"{artifact_dir}/{must_hold}" for a in client.list_artifacts(run_id, artifact_dir)):
        raise RuntimeError(f"run {run_id} has no {artifact_dir}/{must_hold} artifact to register")
    score = run.data.metrics.get(metric)
    if score is None:
        raise RuntimeError(f"run {run_id} has no metric {metric!r} to compare")
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_dir}", run_id=run_id,
                                     tags={metric.replace("/", "_"): str(score)})
    return str(mv.version), promote(name, alias, str(mv.version), metric, force=force)


def promote(name: str, alias: str, version: str, metric: str, *, force: bool = False) -> bool:
    """Move `alias` of the registered model `name` to `version` when its run's `metric` beats the alias holder's
    run's (or `force`, or no holder, or a holder without the metric); say which. Returns whether it moved."""
    from mlflow import MlflowClient  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    client = MlflowClient()
    mv = client.get_model_version(name, version)
    score = client.get_run(str(mv.run_id)).data.metrics.get(metric, float("nan"))
    holder_score = None
    try:
        holder = client.get_model_version_by_alias(name, alias)
        holder_score = client.get_run(str(holder.run_id)).data.metrics.get(metric)
    except MlflowException:
        holder = None
    moved = force or holder is None or holder_score is None or score > holder_score
    if moved:
        client.set_registered_model_alias(name, alias, version)
    print(f"registered {name} version {version} ({metric} {score:.4f}); alias {alias!r} "
          + ("moved to it" if moved or holder is None else f"stays on version {holder.version} ({metric} "
                                                          f"{holder_score:.4f})"))
    return moved
