"""The learned receipt extractor in MLflow: each training run logs its parameters, its cross-validated per-field
scores and the model (MLflow's scikit-learn flavour, serialised with skops, its tree type trusted explicitly: load
only models you trained), and is registered as
`receipt-extractor`; the alias `champion` moves to it when its cross-validated F1 beats the holder's. The service
loads `models:/receipt-extractor@champion` (RECEIPT_EXTRACTOR=auto or learned)."""
from __future__ import annotations

import logging
from typing import Any

from clip_embedder.receipts.learned import CLASSES, LearnedExtractor

log = logging.getLogger(__name__)
MODEL_NAME = "receipt-extractor"
ALIAS = "champion"
EXPERIMENT = "receipt_extractor"
METRIC = "cv/f1"
#: the one type outside skops's default trust a HistGradientBoostingClassifier holds: its trees' node arrays (skops
#: warns that a crafted file could index out of bounds through them — trust only runs you trained)
TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def log_run(extractor: LearnedExtractor, params: dict[str, Any], scores: dict[str, Any], *,
            register: bool = True, name: str = MODEL_NAME, alias: str = ALIAS) -> tuple[str, str | None, bool]:
    """Log one training run (params, `cv/precision|recall|f1`, `cv/<field>/f1`, the model under `model/`) in the
    `receipt_extractor` experiment and, with `register`, register it and promote it when better.

    Returns:
        (run id, the registered version or None, whether `alias` moved to it).
    """
    import mlflow  # noqa: PLC0415
    import mlflow.sklearn  # noqa: PLC0415
    import sklearn  # noqa: PLC0415

    from clip_embedder.models.mlflow_registry import promote  # noqa: PLC0415

    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="receipt-extractor") as run:
        mlflow.log_params({**params, "classes": ",".join(CLASSES)})
        mlflow.log_metrics({f"cv/{k}": v for k, v in scores.items() if k in ("precision", "recall", "f1")})
        mlflow.log_metrics({f"cv/{field}/{k}": v for field, per in scores.get("per_field", {}).items()
                            for k, v in per.items()})
        info = mlflow.sklearn.log_model(
            extractor.model, name="model", skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", "skops==0.16.0"],
            registered_model_name=name if register else None)
        run_id = run.info.run_id
    if not register:
        return run_id, None, False
    version = str(info.registered_model_version)
    return run_id, version, promote(name, alias, version, METRIC)


def load_champion(name: str = MODEL_NAME, alias: str = ALIAS) -> LearnedExtractor | None:
    """The registered champion (`models:/<name>@<alias>`) as an extractor, or None when the registry has none.

    Raises:
        whatever MLflow raises when the tracking server cannot be reached.
    """
    import mlflow.sklearn  # noqa: PLC0415
    from mlflow import MlflowClient  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    model = mlflow.sklearn.load_model(f"models:/{name}@{alias}")
    return LearnedExtractor(model, version=str(version.version))


def create_extractor(settings: Any) -> Any:
    """The extractor RECEIPT_EXTRACTOR names: `rules`; `learned` (the registered champion); `auto` (the champion
    when the registry at MLFLOW_TRACKING_URI has one, else the rules — said once in the log); `openai` / `bedrock`
    (a hosted vision-language model reading the photo, `receipts.hosted`, configured by the ANALYSIS_* settings).

    Raises:
        RuntimeError: RECEIPT_EXTRACTOR=learned and no champion is registered, or a hosted provider's client is not
            installed.
    """
    from clip_embedder.models.mlflow_registry import configure_mlflow  # noqa: PLC0415
    from clip_embedder.receipts.rules import RulesExtractor  # noqa: PLC0415

    if settings.receipt_extractor == "rules":
        return RulesExtractor()
    if settings.receipt_extractor in ("openai", "bedrock"):
        from clip_embedder.models.registry import ANALYSIS_PROVIDERS  # noqa: PLC0415
        from clip_embedder.receipts.hosted import HostedReceiptExtractor, load_prompt  # noqa: PLC0415

        provider = ANALYSIS_PROVIDERS.create(settings.receipt_extractor, settings)
        return HostedReceiptExtractor(provider, load_prompt(settings.analysis_prompts_dir))
    configure_mlflow(settings.mlflow_tracking_uri)
    try:
        champion = load_champion()
    except Exception as e:  # an unreachable tracking server: the rules still work
        if settings.receipt_extractor == "learned":
            raise RuntimeError(f"RECEIPT_EXTRACTOR=learned, but MLflow at {settings.mlflow_tracking_uri} cannot "
                               f"be read: {e}") from e
        log.warning("receipts: MLflow at %s cannot be read (%s); using the rules", settings.mlflow_tracking_uri, e)
        return RulesExtractor()
    if champion is not None:
        log.info("receipts: the learned extractor %s@%s (version %s)", MODEL_NAME, ALIAS, champion.version)
        return champion
    if settings.receipt_extractor == "learned":
        raise RuntimeError(f"RECEIPT_EXTRACTOR=learned, but no {MODEL_NAME}@{ALIAS} is registered: run "
                           "`make train-receipts` (or python -m clip_embedder.scripts.train_receipts)")
    log.info("receipts: no %s@%s registered (make train-receipts); using the rules", MODEL_NAME, ALIAS)
    return RulesExtractor()
