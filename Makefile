# Two commands: `make demo` (build the subset, index it, serve the API and the UI) and `make test`.
# Both create .venv and install the pinned dependencies on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A local copy of the data and weights: used when the folder exists, else the official sources.
SHARED ?= ../shared
ifneq ($(wildcard $(SHARED)/models/yolov5/yolov5n.pt),)
LOCAL_MODELS ?= $(SHARED)/models
endif
ifneq ($(wildcard $(SHARED)/datasets/coco128/images),)
COCO_ANNOTATIONS ?= $(SHARED)/datasets/coco128/annotations/instances_coco128_train2017.json
COCO_IMAGES ?= $(SHARED)/datasets/coco128/images
endif
ifneq ($(wildcard $(SHARED)/datasets/receipts_sroie/key),)
RECEIPTS_DIR ?= $(SHARED)/datasets/receipts_sroie
endif
export LOCAL_MODELS COCO_ANNOTATIONS COCO_IMAGES RECEIPTS_DIR
API_PORT ?= 8000
UI_PORT ?= 8501

.PHONY: demo test test-unit compose-smoke install index mlflow-ui baseline train evaluate operating-points benchmarks benchmarks-scale clean-index help train-receipts
DATA_VERSION ?= version_1
EPOCHS ?= 10
IMGSZ ?= 640

help:
	@echo "make demo   - install, build the COCO subset, index it, serve API (:$(API_PORT)) + UI (:$(UI_PORT))"
	@echo "make test   - install and run the test suite (tests/unit, then tests/integration)"
	@echo "make test-unit - the unit tier alone: no data, database or weights (seconds)"
	@echo "make compose-smoke - build the images (base from Debian packages), bring docker-compose up with host"
	@echo "                  networking and check it end to end (~15 min; root and Docker's engine; not in make test)"
	@echo "make train-receipts - train the learned receipt extractor on RECEIPTS_DIR, log it to MLflow, register it"
	@echo "make benchmarks - indexing throughput (and its model-forward limit), search latency, retrieval quality"
	@echo "                  (vocabulary, no-match, OCR) and ingest (queue) figures"
	@echo "make benchmarks-scale - 1,000,000 vectors (FAISS Flat / HNSW / IVF-SQ8), the API over HTTP at 1,000,000 items,"
	@echo "                  the Ray runner against the sequential one (~30 min, ~8 GB of memory)"

$(VENV)/.installed: pyproject.toml scripts/install_system_packages.sh
	bash scripts/install_system_packages.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[train,test]"
	touch $@

install: $(VENV)/.installed

demo: install
	PY=$(PY) API_PORT=$(API_PORT) UI_PORT=$(UI_PORT) bash scripts/demo.sh

index: install
	PY=$(PY) DEMO_SERVE=0 bash scripts/demo.sh

test: install
	$(PY) -m pytest -q

# docker-compose for real: images, every service, uploads, two workers, a killed worker, down/up, Prometheus
compose-smoke:
	SHARED=$(SHARED) bash scripts/compose_smoke.sh

# the quick loop: no ../shared, no database, no weights (under 30 s)
test-unit: install
	$(PY) -m pytest -q tests/unit

benchmarks: install
	$(PY) benchmarks/bench_index_search.py
	$(PY) benchmarks/bench_forward.py
	$(PY) benchmarks/bench_clip.py
	$(PY) benchmarks/bench_quality.py
	$(PY) benchmarks/bench_ingest.py

benchmarks-scale: install
	$(PY) benchmarks/bench_scale.py --n 1000000 --queries 200
	$(PY) benchmarks/bench_http_scale.py --items 1000000
	$(PY) benchmarks/bench_forward.py --ray

baseline: install
	$(PY) yolov5/baseline.py --weights models/yolov5n.pt --coco_subset_data_version $(DATA_VERSION) --imgsz $(IMGSZ)

train: install
	$(PY) yolov5/train_mlflow.py --imgsz $(IMGSZ) --batch-size 16 --epochs $(EPOCHS) --data coco_subset.yaml \
	  --weights models/yolov5n.pt --project runs/train --name yolov5_coco_subset --device 0 \
	  --coco_subset_data_version $(DATA_VERSION)

evaluate: install
	$(PY) yolov5/evaluate.py --weights "models:/$${REGISTERED_MODEL_NAME:-coco-subset-yolov5}@$${MODEL_ALIAS:-champion}" \
	  --coco_subset_data_version $(DATA_VERSION) --task test --imgsz $(IMGSZ) --project runs/eval --name eval_champion

# the champion's accuracy against serving latency at several input sizes and runtimes, one MLflow run (table + plot)
operating-points: install
	$(PY) yolov5/operating_points.py --weights "models:/$${REGISTERED_MODEL_NAME:-coco-subset-yolov5}@$${MODEL_ALIAS:-champion}" \
	  --coco_subset_data_version $(DATA_VERSION) --task test --imgsz 320,416,512,640 --runtimes torch,onnx,openvino

# the learned receipt extractor: k-fold scores, an MLflow run, registered as receipt-extractor (champion when better)
train-receipts: install
	$(PY) -m clip_embedder.scripts.train_receipts

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" --port 5000

clean-index:
	rm -rf data/
