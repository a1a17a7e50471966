#!/usr/bin/env bash
# The demo behind `make demo`: weights → COCO subset → index → API + indexing worker + Streamlit.
# LOCAL_MODELS / COCO_ANNOTATIONS / COCO_IMAGES name a local copy; without them the official
# sources are downloaded (YOLOv5 release, google-coral MobileNet, OpenCLIP hub, cocodataset.org).
set -euo pipefail
PY=${PY:-.venv/bin/python}
API_PORT=${API_PORT:-8000}
UI_PORT=${UI_PORT:-8501}

if [ -n "${LOCAL_MODELS:-}" ]; then
  "$PY" -m clip_embedder.scripts.fetch_assets --from "$LOCAL_MODELS" >/dev/null
else
  "$PY" -m clip_embedder.scripts.fetch_assets --download --clip >/dev/null
fi
set -a; . models/assets.env; set +a
echo "spaces: $SPACES"

subset_args=()
[ -n "${COCO_ANNOTATIONS:-}" ] && subset_args+=(--annotations "$COCO_ANNOTATIONS")
[ -n "${COCO_IMAGES:-}" ] && subset_args+=(--images "$COCO_IMAGES")
dataset=$("$PY" scripts/extract_coco_subset.py "${subset_args[@]}" --no-progress | tail -n 1 | sed -E 's/^(up to date: )?([^: ]+).*/\2/')
echo "dataset: $dataset"

# The detector comes from the MLflow Model Registry (DEMO_MLFLOW=0: the local weights file instead).
# The first time, the pretrained weights are registered as a baseline run, evaluated on the subset.
if [ "${DEMO_MLFLOW:-1}" = "1" ]; then
  model="${REGISTERED_MODEL_NAME:-coco-subset-yolov5}@${MODEL_ALIAS:-champion}"
  if ! "$PY" -c "import sys; from clip_embedder.models.mlflow_registry import configure_mlflow, resolve_model_uri; configure_mlflow(); resolve_model_uri('models:/$model')" >/dev/null 2>&1; then
    echo "registering the pretrained detector in MLflow (yolov5/baseline.py) ..."
    "$PY" yolov5/baseline.py --weights "$DETECTOR_WEIGHTS" --coco_subset_data_version "$(basename "$dataset")" \
      --datasets-root "$(dirname "$dataset")" 2>&1 | grep -E "^(baseline run|registered|error)" || true
  fi
  export MODEL_URI="models:/$model"
  echo "detector: $MODEL_URI (MLflow UI: make mlflow-ui)"
  # the learned receipt extractor, trained and registered the first time (RECEIPT_EXTRACTOR=auto serves it)
  if [ -n "${RECEIPTS_DIR:-}" ] && ! "$PY" -c "import sys; from clip_embedder.models.mlflow_registry import configure_mlflow; configure_mlflow(); from clip_embedder.receipts.registry import load_champion; sys.exit(load_champion() is None)" >/dev/null 2>&1; then
    echo "training the receipt extractor on $RECEIPTS_DIR (make train-receipts) ..."
    "$PY" -m clip_embedder.scripts.train_receipts 2>&1 | tail -n 1 || true
  fi
fi
# --analyze: what each photo holds (description, sensitive verdict, labels), for the page's filters and "analyse"
"$PY" -m clip_embedder.scripts.embed_and_index --split all --dataset_path "$dataset" --redetect --analyze
# a few receipts in the household ledger the first time (the page's "ledger" mode; DEMO_RECEIPTS=0: none)
if [ -n "${RECEIPTS_DIR:-}" ] && [ "${DEMO_RECEIPTS:-8}" -gt 0 ] && "$PY" -c "import sys; from clip_embedder.config import Settings; from clip_embedder.db.store import Store; s = Store.open(Settings()); n = s.ledger.counts()['receipts']; s.close(); sys.exit(n > 0)" >/dev/null 2>&1; then
  echo "reading ${DEMO_RECEIPTS:-8} receipts of $RECEIPTS_DIR into the ledger (extract_receipt --ingest) ..."
  mapfile -t receipts < <(ls "$RECEIPTS_DIR"/img/*.jpg | head -n "${DEMO_RECEIPTS:-8}")
  "$PY" -m clip_embedder.scripts.extract_receipt --ingest "${receipts[@]}" >/dev/null || true
fi

[ "${DEMO_SERVE:-1}" = "1" ] || exit 0

# Writes (uploads, scans, deletes) need an API key: keep the one made on the first run, unless API_KEYS is set.
if [ -z "${API_KEYS:-}" ]; then
  mkdir -p data
  [ -s data/demo_api_key ] || "$PY" -c "import secrets; print(secrets.token_urlsafe(24))" > data/demo_api_key
  chmod 600 data/demo_api_key
  API_KEYS=$(cat data/demo_api_key)
fi
export API_KEYS
export API_KEY="${API_KEY:-${API_KEYS%%,*}}"  # what the page sends when adding photos

# API, one indexing worker and the page; Ctrl-C (or any exit) stops every process started here.
pids=()
stop_all() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
}
trap stop_all EXIT INT TERM
"$PY" -m uvicorn api.main:app --host 0.0.0.0 --port "$API_PORT" &
api_pid=$!
pids+=($api_pid)
ANALYZE="${ANALYZE:-true}" "$PY" -m clip_embedder.worker &  # photos added in the page are analysed too
pids+=($!)
for _ in $(seq 1 120); do
  curl -fs "http://localhost:$API_PORT/api/health" >/dev/null 2>&1 && break
  kill -0 $api_pid 2>/dev/null || { echo "the API failed to start" >&2; exit 1; }
  sleep 1
done
echo "API: http://localhost:$API_PORT/docs   UI: http://localhost:$UI_PORT   (Ctrl-C stops everything)"
echo "API key for writes: $API_KEY   (kept in data/demo_api_key)"
echo "  add photos:  curl -H \"X-API-Key: $API_KEY\" -F files=@photo.jpg http://localhost:$API_PORT/api/images"
echo "  follow them: curl \"http://localhost:$API_PORT/api/tasks?batch=<batch id from the answer>\""
echo "  a receipt:   curl -H \"X-API-Key: $API_KEY\" -F files=@receipt.jpg http://localhost:$API_PORT/api/receipts"
echo "  the ledger:  curl \"http://localhost:$API_PORT/api/ledger?group_by=month\"  (the page: mode \"ledger\")"
API_URL="http://localhost:$API_PORT" "$PY" -m streamlit run streamlit_app.py --server.port "$UI_PORT" \
  --server.headless true --browser.gatherUsageStats false &
pids+=($!)
wait -n "${pids[@]}" || true
