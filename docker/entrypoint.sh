#!/usr/bin/env bash
# The containers' entry point: `api`, `worker`, `ui`, `mlflow`, `init` (one-shot set-up) or any command.
# Services listen on BIND_HOST (0.0.0.0 on a bridge network; 127.0.0.1 with docker-compose.host.yml).
set -euo pipefail
BIND_HOST=${BIND_HOST:-0.0.0.0}
# what `init` found and decided (weights paths, SPACES, the detector's MODEL_URI): the environment wins
if [ -f models/assets.env ]; then
  while IFS='=' read -r key value; do
    [ -n "$key" ] && [ -z "${!key:-}" ] && export "$key=$value"
  done < models/assets.env
fi
cmd=${1:-api}
[ $# -gt 0 ] && shift
case "$cmd" in
  api)    exec uvicorn api.main:app --host "$BIND_HOST" --port "${API_PORT:-8000}" "$@" ;;
  worker) exec python -m clip_embedder.worker "$@" ;;
  ui)     exec streamlit run streamlit_app.py --server.address "$BIND_HOST" --server.port "${UI_PORT:-8501}" \
            --server.headless true --browser.gatherUsageStats false "$@" ;;
  mlflow) exec mlflow server --host "$BIND_HOST" --port "${MLFLOW_PORT:-5000}" \
            --backend-store-uri "sqlite:////mlflow/mlflow.db" --artifacts-destination /mlflow/artifacts "$@" ;;
  init)   exec bash /app/compose_init.sh "$@" ;;
  *)      exec "$cmd" "$@" ;;
esac
