#!/usr/bin/env bash
# Brings the compose deployment up for real with host networking and checks it end to end (`make compose-smoke`):
#   base image from Debian's packages (debootstrap → docker import) → the four images → every service healthy →
#   the page and /docs answer → the nine photos uploaded with the key, all succeeded, "parrot" finds parrot.jpg →
#   two workers share a scan of COCO128 → a worker killed mid-job: its jobs retried, nothing lost or doubled →
#   down + up keeps everything → Prometheus has the API and the workers up and every dashboard query answers →
#   down -v removes it all. Prints the time of each step and the image sizes.
# Needs root (or a docker group), Docker's engine (started here when absent: no bridge network), docker-compose
# (1.29 or v2), debootstrap, curl, python3; SHARED: a folder with datasets/photos, datasets/coco128 and models
# (`make compose-smoke` passes the Makefile's SHARED).
# Ports (127.0.0.1): SMOKE_API_PORT 18000, UI 18501, DB 15432, MLflow 15000, Prometheus 19090.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=$(cd "${SHARED:?set SHARED to a folder with datasets/photos, datasets/coco128 and models}" && pwd)
PROJECT=${SMOKE_PROJECT:-clipsmoke}
export BASE_IMAGE=${BASE_IMAGE:-clip-embedder/debian:bookworm} DB_BASE_IMAGE=${DB_BASE_IMAGE:-clip-embedder/debian:trixie}
export API_PORT=${SMOKE_API_PORT:-18000} UI_PORT=${SMOKE_UI_PORT:-18501} DB_PORT=${SMOKE_DB_PORT:-15432}
export MLFLOW_PORT=${SMOKE_MLFLOW_PORT:-15000} PROMETHEUS_PORT=${SMOKE_PROMETHEUS_PORT:-19090}
export SHARED_MODELS_DIR=$SHARED/models SHARED_COCO_DIR=$SHARED/datasets/coco128 PHOTOS_DIR=$SHARED/datasets
API=http://127.0.0.1:$API_PORT
PROM=http://127.0.0.1:$PROMETHEUS_PORT
T0=$SECONDS
last=$SECONDS
step() { printf '\n== [%4ds] %s\n' "$((SECONDS - T0))" "$*"; last=$SECONDS; }
took() { printf '   ok: %s (%d s)\n' "$*" "$((SECONDS - last))"; }
fail() { echo "FAILED: $*" >&2; dc ps >&2 || true; dc logs --tail 40 >&2 || true; exit 1; }
# the smoke's own settings: a dead worker's job is run again after 10 s (not 30)
SMOKE_YML=$(mktemp /tmp/clipsmoke.XXXXXX.yml)
trap 'rm -f "$SMOKE_YML"' EXIT
printf 'services:\n  api: {environment: {WORKER_STALLED_AFTER: "10"}}\n  worker: {environment: {WORKER_STALLED_AFTER: "10"}}\n' >"$SMOKE_YML"
dc() {
  docker-compose -p "$PROJECT" -f docker-compose.yml -f docker-compose.host.yml -f "$SMOKE_YML" --profile monitoring "$@"
}
j() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

step "0. Docker engine"
if ! docker info >/dev/null 2>&1; then
  # no default bridge: every container here uses the host's network (no traffic to 172.16.0.0/12)
  (dockerd --bridge=none --iptables=false --ip-masq=false >/tmp/clip-embedder-dockerd.log 2>&1 &)
  for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || fail "dockerd did not start (/tmp/clip-embedder-dockerd.log)"
fi
docker-compose version --short 2>/dev/null | sed 's/^/   docker-compose /'
[ -f .env ] || { cp .env.example .env; echo "   wrote .env from .env.example"; }
dc down -v --remove-orphans >/dev/null 2>&1 || true
took "engine up"

step "1. base images from Debian's packages (debootstrap → docker import)"
bash scripts/compose_base_image.sh bookworm "$BASE_IMAGE"
bash scripts/compose_base_image.sh trixie "$DB_BASE_IMAGE"
took "base image"

step "2. images (serve, trainer, db, prometheus)"
cp /usr/local/share/ca-certificates/*.crt docker/certs/ 2>/dev/null || true  # a TLS-intercepting proxy's CA
if curl -fsI -m 10 https://download.pytorch.org/whl/cpu/ >/dev/null 2>&1; then
  export TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
else
  export TORCH_INDEX_URL=https://pypi.org/simple  # PyTorch's own index unreachable: PyPI's (CUDA) build
fi
build() {  # tag target dockerfile
  local t=$SECONDS
  DOCKER_BUILDKIT=0 docker build -q --network host --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg DB_BASE_IMAGE="$DB_BASE_IMAGE" \
    --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" ${2:+--target "$2"} -f "$3" -t "$1" . >/tmp/clipsmoke-build.log 2>&1 \
    || { tail -n 30 /tmp/clipsmoke-build.log >&2; fail "docker build $1"; }
  printf '   %-26s %6.0f MB  (%d s)\n' "$1" "$(docker image inspect -f '{{.Size}}' "$1")e-6" "$((SECONDS - t))"
}
build clip-embedder:serve serve Dockerfile
build clip-embedder:trainer trainer Dockerfile
build clip-embedder:db "" docker/db.Dockerfile
build clip-embedder:prometheus "" docker/prometheus.Dockerfile
took "images built"

wait_healthy() {  # every running service container healthy (init: exited 0)
  local deadline=$((SECONDS + ${1:-600})) ids states
  while [ $SECONDS -lt $deadline ]; do
    ids=$(dc ps -q)
    states=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}} {{.State.ExitCode}}' $ids)
    if echo "$states" | grep -q "init exited  [1-9]"; then fail "init failed"; fi
    if ! echo "$states" | grep -v "_init_" | grep -vq " running healthy "; then
      echo "$states" | sed 's/^\//   /'; return 0
    fi
    sleep 2
  done
  echo "$states" >&2; fail "services not healthy in time"
}

step "3. up (db, mlflow, init, api, worker, ui, prometheus)"
dc up -d --no-build >/dev/null 2>&1 || fail "compose up"
wait_healthy 900
[ "$(docker network ls -q --filter driver=bridge | wc -l)" = "0" ] || fail "a bridge network exists"
docker inspect -f '{{.HostConfig.NetworkMode}}' $(dc ps -q) | sort -u | grep -qx host || fail "not host networking"
dc logs --no-color init | grep -E "\| (\[init|API key|detector:|baseline run|registered)" | cut -c1-160 | sed 's/^/  /' || true
KEY=$(docker exec "${PROJECT}_api_1" cat /app/data/secrets/api_key 2>/dev/null \
  || docker exec "${PROJECT}-api-1" cat /app/data/secrets/api_key)
[ -n "$KEY" ] || fail "no API key"
took "every service healthy"

step "4. the page and /docs answer"
curl -fs "http://127.0.0.1:$UI_PORT/_stcore/health" >/dev/null || fail "page"
curl -fs "http://127.0.0.1:$UI_PORT/" | grep -qi "streamlit" || fail "page html"
curl -fs "$API/docs" | grep -q "swagger-ui" || fail "/docs"
curl -fs "$API/openapi.json" | j "len(d['paths'])" | sed 's/^/   OpenAPI paths: /'
took "page and /docs"

wait_batch() {  # batch id → waits until no task is queued or running; prints counts
  local deadline=$((SECONDS + ${2:-600})) counts
  while [ $SECONDS -lt $deadline ]; do
    counts=$(curl -fs "$API/api/tasks?batch=$1" | j "d['counts']")
    if ! echo "$counts" | grep -qE "queued|running"; then echo "$counts"; return 0; fi
    sleep 2
  done
  fail "batch $1 not done: $counts"
}
# /api/health's counts are at most HEALTH_MAX_AGE (2 s) old: ask, wait for the refresh, ask again
fresh_health() { curl -fs "$API/api/health" >/dev/null; sleep 3; curl -fs "$API/api/health"; }
count_images() { fresh_health | j "d['counts']['images']"; }

step "5. the nine photos uploaded with the key → succeeded → \"parrot\" finds parrot.jpg"
args=(); for f in "$SHARED"/datasets/photos/*.jpg; do args+=(-F "files=@$f"); done
[ ${#args[@]} -eq 18 ] || fail "expected nine photos"
code=$(curl -s -o /dev/null -w '%{http_code}' "${args[@]}" "$API/api/images")
[ "$code" = "401" ] || [ "$code" = "403" ] || fail "an upload without the key answered $code"
batch=$(curl -fs -H "X-API-Key: $KEY" "${args[@]}" "$API/api/images" | j "d['batch']")
counts=$(wait_batch "$batch"); echo "   $counts"
[ "$counts" = "{'succeeded': 9}" ] || fail "nine photos: $counts"
top=$(curl -fs "$API/api/search_text?query=parrot&top_k=3" | j "[r['file_name'] for r in d['results']]")
echo "   parrot → $top"
echo "$top" | grep -q "'parrot.jpg'" || fail "parrot not found"
took "nine photos"

step "6. --scale worker=2 shares a scan of COCO128"
dc up -d --no-build --no-recreate --scale worker=2 >/dev/null 2>&1 || fail "scale"
wait_healthy 300 >/dev/null
before=$(count_images)
batch=$(curl -fs -H "X-API-Key: $KEY" -H 'Content-Type: application/json' -d '{"path": "/photos/coco128/images"}' \
  "$API/api/collections/scan" | j "d['batch']")
counts=$(wait_batch "$batch" 900); echo "   $counts"
echo "$counts" | grep -q "'succeeded': 128" || fail "scan: $counts"
per_worker=$(for p in $(seq 9101 9116); do
  { curl -fs "http://127.0.0.1:$p/metrics" 2>/dev/null || true; } \
    | awk -v p=$p '/^clip_embedder_worker_jobs_total\{outcome="succeeded"\}/ {print p": "$2}'
done)
echo "$per_worker" | sed 's/^/   worker on :/'
[ "$(echo "$per_worker" | awk '$2 > 0' | wc -l)" -ge 2 ] || fail "not both workers processed jobs"
echo "   images: $before → $(count_images)"
took "two workers"

step "7. a worker killed mid-job: retried, nothing lost or doubled"
n_kill=24
args=(); for f in $(ls "$SHARED"/datasets/receipts_sroie/img/*.jpg | head -n $n_kill); do args+=(-F "files=@$f"); done
before=$(count_images)
batch=$(curl -fs -H "X-API-Key: $KEY" "${args[@]}" "$API/api/images" | j "d['batch']")
for _ in $(seq 1 200); do
  curl -fs "$API/api/tasks?batch=$batch" | j "d['counts']" | grep -q "running" && break; sleep 0.2
done
victim=$(dc ps -q worker | head -n 1)
docker kill -s KILL "$victim" >/dev/null; echo "   killed $(docker inspect -f '{{.Name}}' "$victim") with a job running"
counts=$(wait_batch "$batch" 900); echo "   $counts"
[ "$counts" = "{'succeeded': $n_kill}" ] || fail "after the kill: $counts"
retried=$(curl -fs "$API/api/tasks?batch=$batch" | j "sum(t['attempts'] > 1 for t in d['tasks'])")
after=$(count_images)
echo "   tasks retried: $retried; images $before → $after (+$((after - before)))"
[ "$((after - before))" = "$n_kill" ] || fail "expected +$n_kill images"
[ "$retried" -ge 1 ] || fail "no task was retried"
took "kill mid-job"

step "8. down, then up: the same counts and answers"
health() { fresh_health | j "{k: v for k, v in sorted(d['counts'].items())}"; }
snap_counts=$(health); snap_top=$(curl -fs "$API/api/search_text?query=parrot&top_k=5" | j "[r['image_id'] for r in d['results']]")
dc down >/dev/null 2>&1 || fail "down"
dc up -d --no-build >/dev/null 2>&1 || fail "up again"
wait_healthy 600 >/dev/null
[ "$(health)" = "$snap_counts" ] || fail "counts changed: $snap_counts → $(health)"
[ "$(curl -fs "$API/api/search_text?query=parrot&top_k=5" | j "[r['image_id'] for r in d['results']]")" = "$snap_top" ] \
  || fail "answers changed"
echo "   counts: $snap_counts"
took "kept across down/up"

step "9. Prometheus: both targets up, every dashboard query answers"
for _ in $(seq 1 30); do
  up=$(curl -fs "$PROM/api/v1/targets" | j "sorted({(t['labels']['job'], t['health']) for t in d['data']['activeTargets']})")
  echo "$up" | grep -q "('api', 'up')" && echo "$up" | grep -q "('worker', 'up')" && break; sleep 2
done
echo "   targets: $up"
echo "$up" | grep -q "('api', 'up')" && echo "$up" | grep -q "('worker', 'up')" || fail "targets"
sleep 12  # two scrapes after the restart, so rate() has samples
python3 - "$PROM" docker/grafana/dashboards/clip-embedder.json <<'EOF' || fail "dashboard queries"
import json, sys, urllib.parse, urllib.request
prom, path = sys.argv[1:3]
bad = 0
for panel in json.load(open(path))["panels"]:
    for t in panel["targets"]:
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": t["expr"]})
        result = json.load(urllib.request.urlopen(url, timeout=10))["data"]["result"]
        bad += not result
        print(f"   {'ok ' if result else 'NO DATA'} {len(result):3d} series  {panel['title']}")
sys.exit(1 if bad else 0)
EOF
took "Prometheus"

step "10. down -v removes it all"
dc down -v --remove-orphans >/dev/null 2>&1 || fail "down -v"
left=$(docker volume ls -q | grep "^${PROJECT}_" || true)
[ -z "$left" ] || fail "volumes left: $left"
[ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ] || fail "containers left"
took "nothing left"

printf '\ncompose smoke: all checks passed in %d s\n' "$((SECONDS - T0))"
