#!/usr/bin/env bash
# The compose `init` step (trainer image), run once before the services start and again on every `up`: each step
# is skipped when its work is there. Prints the time of each step.
#  1. model weights into the models volume (LOCAL_MODELS: a mounted copy; else the official sources)
#  2. database migrations
#  3. an API key, generated once when API_KEYS is empty, kept in API_KEYS_FILE and printed once
#  4. the detector in MLflow: the pretrained weights registered as the champion when the registry has none
#     (evaluated on the COCO subset: COCO_ANNOTATIONS + COCO_IMAGES mounted, else downloaded)
#  5. ONNX exports of every served model (the serving image has no torch)
set -euo pipefail
step() { printf '[init %s] %s\n' "$(date +%T)" "$*"; }
t0=$SECONDS

# a local copy mounted by compose (SHARED_MODELS_DIR, SHARED_COCO_DIR) is used when it holds what is needed
if [ -z "${LOCAL_MODELS:-}" ] && [ -f /shared-models/yolov5/yolov5n.pt ]; then export LOCAL_MODELS=/shared-models; fi
if [ -z "${COCO_ANNOTATIONS:-}" ] && [ -d /shared-coco/images ] && ls /shared-coco/annotations/*.json >/dev/null 2>&1; then
  COCO_ANNOTATIONS=$(ls /shared-coco/annotations/*.json | head -n 1); export COCO_ANNOTATIONS COCO_IMAGES=/shared-coco/images
fi

step "1/5 model weights"
if [ -n "${LOCAL_MODELS:-}" ]; then
  python -m clip_embedder.scripts.fetch_assets --from "$LOCAL_MODELS" >/dev/null
else
  python -m clip_embedder.scripts.fetch_assets --download >/dev/null
fi
model_uri=${MODEL_URI:-}
set -a; . models/assets.env; set +a

step "2/5 database migrations"
python -c "from clip_embedder.config import Settings; from clip_embedder.db.store import Store; Store.open(Settings()).close()"

step "3/5 API key"
if [ -z "${API_KEYS:-}" ] && [ -n "${API_KEYS_FILE:-}" ]; then
  if [ ! -s "$API_KEYS_FILE" ]; then
    mkdir -p "$(dirname "$API_KEYS_FILE")"
    (umask 077; python -c "import secrets; print(secrets.token_urlsafe(24))" > "$API_KEYS_FILE")
    echo "API key for writes (printed this once; kept in the data volume, $API_KEYS_FILE): $(cat "$API_KEYS_FILE")"
  else
    echo "API key: kept in $API_KEYS_FILE (docker-compose run --rm init cat $API_KEYS_FILE)"
  fi
fi

step "4/5 detector in MLflow (${MLFLOW_TRACKING_URI:-local})"
model="${REGISTERED_MODEL_NAME:-coco-subset-yolov5}@${MODEL_ALIAS:-champion}"
has_champion() {
  python -c "from clip_embedder.models.mlflow_registry import configure_mlflow, resolve_model_uri; configure_mlflow(); resolve_model_uri('models:/$model')" >/dev/null 2>&1
}
if [ "${INIT_REGISTER_BASELINE:-1}" = "1" ] && ! has_champion; then
  # COCO_ANNOTATIONS / COCO_IMAGES: a mounted copy (else cocodataset.org)
  dataset=$(python scripts/extract_coco_subset.py --output data/datasets/coco_subset --cache data/datasets/downloads \
    --no-progress | tail -n 1 | sed -E 's/^(up to date: )?([^: ]+).*/\2/')
  python yolov5/baseline.py --weights "$DETECTOR_WEIGHTS" --coco_subset_data_version "$(basename "$dataset")" \
    --datasets-root "$(dirname "$dataset")" --project data/runs/baseline 2>&1 | grep -E "^(baseline run|registered|error)" || true
fi
if [ -z "$model_uri" ] && has_champion; then
  model_uri="models:/$model"
fi
# the services read what init decided from models/assets.env (their own environment wins)
grep -v '^MODEL_URI=' models/assets.env > models/assets.env.tmp || true
echo "MODEL_URI=$model_uri" >> models/assets.env.tmp
mv models/assets.env.tmp models/assets.env
echo "detector: ${model_uri:-$DETECTOR_WEIGHTS}"

step "5/5 ONNX exports"
MODEL_URI=$model_uri python -m clip_embedder.scripts.export_models
step "done in $((SECONDS - t0)) s"
