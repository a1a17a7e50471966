"""One typed settings object for the whole project, read from the environment and `.env`.

Every variable is documented once, in `.env.example`; the field names below are the variable names
(case-insensitive). Paths are relative to the current working directory unless absolute.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from clip_embedder.models.registry import (
    ANALYSIS_PROVIDERS,
    EMBEDDING_SPACES,
    FACE_DETECTORS,
    NUDITY_MODELS,
    OCR_ENGINES,
    PERSONAL_DATA,
    TAGGERS,
)

#: Embedding spaces this project knows how to build (the registry `clip_embedder.models.registry.EMBEDDING_SPACES`).
KNOWN_SPACES = EMBEDDING_SPACES.names()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers' cpusets set), else `os.cpu_count()`."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    """Project settings. Construct with keyword overrides in tests: ``Settings(spaces=["text"])``."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    # --- storage -------------------------------------------------------------------------------
    database_url: str | None = Field(
        None, description="PostgreSQL URL with pgvector; empty = embedded server in PGDATA_DIR")
    pgdata_dir: Path = Field(Path("data/pgdata"), description="data folder of the embedded PostgreSQL")
    faiss_dir: Path = Field(Path("data/faiss"), description="folder of the derived FAISS indexes")
    pgvector_index: Literal["hnsw", "none"] = Field(
        "hnsw", description="pgvector's HNSW index on each vectors table: hnsw (SQL similarity queries in the "
                            "database) or none (the service searches FAISS; every write is cheaper at millions of "
                            "vectors)")
    faiss_gpu: bool = Field(False, description="search FAISS on a GPU when faiss-gpu and a GPU exist")
    faiss_index: str = Field("auto", description="FAISS factory string inside the IndexIDMap2: auto (Flat up to "
                                                 "FAISS_APPROX_ABOVE vectors, FAISS_LARGE_INDEX above), Flat "
                                                 "(exact), HNSW32, IVF1024,SQ8 (trained on the space's vectors)")
    # 50,000 x 384: exact search ~8 ms per query on 2 cores (benchmarks/bench_scale.py: 16.5 ms at 100k)
    faiss_approx_above: int = Field(50_000, ge=0, description="FAISS_INDEX=auto: a space with more vectors than this "
                                                              "(when its index is loaded or rebuilt) gets "
                                                              "FAISS_LARGE_INDEX")
    # at 1M x 384 on 2 cores (benchmarks/README.md): IVF1024,SQ8 recall@10 0.981 at 3.3 ms, built in 24 s, 383 MiB;
    # HNSW32 0.948 at efSearch 128 (0.961 at 512), built in 148 s, 1,732 MiB, and it cannot delete in place
    faiss_large_index: str = Field("IVF1024,SQ8", description="FAISS_INDEX=auto: the approximate index above "
                                                              "FAISS_APPROX_ABOVE vectors (a FAISS factory string)")
    faiss_ef_search: int = Field(128, ge=1, description="HNSW efSearch (recall vs speed) for HNSW indexes")
    # 16: at 1M x 384 IVF1024,SQ8 reaches the same recall@10 (0.981, SQ8's ceiling) at 16, 32 and 64 lists, in 1.8 ms
    faiss_nprobe: int = Field(16, ge=1, description="IVF lists searched per query (recall vs speed) for "
                                                   "IVF indexes")

    # --- detector ------------------------------------------------------------------------------
    detector_weights: str = Field("models/yolov5n.pt", description="local YOLOv5 weights file")
    model_uri: str | None = Field(None, description="MLflow model URI (runs:/… or models:/name@alias)")
    mlflow_run_id: str | None = Field(None, description="MLflow run whose weights/best.pt to serve")
    mlflow_tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking store")
    mlflow_experiment_name: str = Field("yolov5_coco_subset", description="MLflow experiment of train/eval runs")
    registered_model_name: str = Field("coco-subset-yolov5", description="MLflow Model Registry name")
    model_alias: str = Field("champion", description="alias moved to a better registered version")
    detector_imgsz: int = Field(640, ge=32, description="inference image size (pixels, multiple of 32)")
    # 0.15: the best text precision@10 on the COCO128 subset among 0.10 / 0.15 / 0.20 / 0.25 (benchmarks/README.md)
    detector_conf: float = Field(0.15, ge=0, le=1, description="minimum detection confidence")
    detector_iou: float = Field(0.45, ge=0, le=1, description="NMS IoU threshold")
    detector_max_det: int = Field(100, ge=1, description="maximum detections per image")
    device: str = Field("cpu", description="torch device: cpu, 0, cuda:0 (falls back to cpu)")
    detector_runtime: Literal["auto", "torch", "onnx", "openvino"] = Field(
        "auto", description="detector forward pass: auto (ONNX Runtime on the CPU, torch on a GPU), torch, onnx, "
                            "openvino (the weights exported once to ONNX)")
    export_dir: Path = Field(Path("models/exported"), description="where models converted to ONNX (the detector, the "
                                                                  "MobileNet embedder) are cached, by weights sha256")

    # --- crop policy ---------------------------------------------------------------------------
    crop_padding: float = Field(0.1, ge=0, le=1, description="padding around a box, fraction of its side")
    crop_min_side: int = Field(24, ge=1, description="drop crops whose shorter side (px) is smaller")
    crop_max_aspect: float = Field(4.0, ge=1, description="drop crops longer/shorter side above this")
    query_min_object_fraction: float = Field(
        0.08, ge=0, le=1, description="an image query's object is searched only when its crop's shorter side is at "
                                      "least this fraction of the photo's shorter side (a medal's figure is not what "
                                      "the photo is about)")

    # --- embedding spaces ----------------------------------------------------------------------
    spaces: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["mobilenet", "text"],
        description="active embedding spaces, comma separated: clip, mobilenet, text")
    clip_model: str = Field("ViT-B-32", description="OpenCLIP model name")
    clip_pretrained: str = Field("laion2b_s34b_b79k", description="OpenCLIP hub tag or local checkpoint path")
    clip_model_config: Path | None = Field(None, description="extra OpenCLIP model config JSON to register")
    mobilenet_weights: Path = Field(
        Path("models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"),
        description="MobileNet-v1 embedding extractor (.tflite)")
    mobilenet_runtime: Literal["auto", "tflite", "onnx"] = Field(
        "auto", description="MobileNet forward pass: tflite (ai-edge-litert) or onnx (the same quantised model "
                            "converted with tflite2onnx, run by ONNX Runtime; bit-identical features); auto = onnx, "
                            "tflite when the conversion fails")
    text_model: str | None = Field(
        None, description="sentence-transformers model path or hub id; empty = bundled all-MiniLM-L6-v2")
    clip_runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="CLIP towers' forward pass: torch or onnx (both towers exported once to EXPORT_DIR, run "
                            "by ONNX Runtime; cosine ≥ 0.999 to torch); auto = onnx on the CPU, torch on a GPU or "
                            "when the export fails")
    text_runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="text space forward pass: torch (sentence-transformers) or onnx (exported once to "
                            "EXPORT_DIR, run by ONNX Runtime: cosine ≥ 0.9999, ~4x faster per query); auto = onnx "
                            "on the CPU, torch on a GPU or when the export fails")
    allow_downloads: bool = Field(False, description="let hub loaders download weights at run time")

    # --- words: ImageNet tags, OCR, relevance floors ------------------------------------------------
    tagger: str = Field("imagenet", description="tag every image and crop with its top "
                                                                       "ImageNet classes (MobileNet-v1 head)")
    tagger_weights: Path = Field(Path("models/mobilenet_quant_v1_224_head_layers.tflite"),
                                 description="MobileNet-v1 ImageNet classifier head (.tflite)")
    tagger_labels: Path = Field(Path("models/imagenet_labels.txt"), description="ImageNet labels (1,001 lines)")
    # 0.15 / 3: on COCO128 crops, tags under 0.15 were mostly wrong (bench_quality.py, benchmarks/README.md)
    tag_min_score: float = Field(0.15, ge=0, le=1, description="probability floor of an ImageNet tag")
    tag_top_k: int = Field(3, ge=1, le=10, description="at most this many ImageNet tags per image or crop")
    tag_confident_score: float = Field(0.5, ge=0, le=1, description="a tag this sure makes a word match on it a "
                                                                     "confident hit; less sure tags only rank")
    ocr: str = Field(
        "rapidocr", description="read text in each photo: rapidocr (English/Chinese, in the wheel), tesseract "
                                "(OCR_LANGS, e.g. Korean; Debian packages) or off")
    ocr_langs: str = Field("kor+eng", description="Tesseract languages (tesseract-ocr-<lang> packages)")
    ocr_min_confidence: float = Field(0.6, ge=0, le=1, description="drop OCR words/lines less sure than this")
    ocr_gate: bool = Field(False, description="rapidocr: look for text with its detector alone at the photo's own size "
                                              "(<= 640 px) first and recognise only photos where it finds some: ~1.3x "
                                              "less OCR time on photos like COCO128's, at the cost of small text (5 "
                                              "of 29 photos with sure text skipped there)")
    # calibrated on the COCO128 index: see benchmarks/README.md ("relevance floor")
    text_min_similarity: float = Field(0.52, ge=-1, le=1, description="cosine floor of a confident hit in the "
                                                                       "text space (MiniLM over descriptions) for "
                                                                       "a sentence or a longer query")
    text_min_similarity_short: float = Field(
        0.71, ge=-1, le=1, description="the text space's floor for a query that names a thing (\"dog\", \"a dog\", "
                                       "\"dogs\", \"a photo of a dog\": searched as \"a photo of a dog\")")
    # not calibrated here (no CLIP weights offline); LAION-400M kept image-text pairs at ViT-B/32 cosine >= 0.3
    clip_min_similarity: float = Field(0.2, ge=-1, le=1, description="cosine floor of a confident text→image hit "
                                                                      "in the clip space")

    # --- analysis: description, sensitive verdict, labels ------------------------------------------
    analyze: bool = Field(False, description="analyse every indexed image (a queue job after it is written; the "
                                             "CLI: --analyze): search filters sensitive= and faces= need it")
    analysis_provider: str = Field("local", description="who analyses a photo: local (this service's models, offline),"
                                                        " openai (any OpenAI-compatible API) or bedrock (Claude)")
    faces: str = Field("full", description="face detector: full (BlazeFace full range) or short (short range), off")
    face_weights_dir: Path = Field(Path("models"), description="folder of the BlazeFace .tflite files")
    face_min_score: float | None = Field(None, ge=0, le=1, description="face score floor; empty = the model's own "
                                                                       "(MediaPipe: 0.6 full, 0.5 short range)")
    face_identifiable_px: int = Field(32, ge=1, description="a face at least this many pixels on its shorter side "
                                                            "makes a photo sensitive")
    nudity: str = Field("opennsfw+nudenet", description="nudity check: opennsfw+nudenet (probability and regions), "
                                                        "opennsfw (probability only) or off")
    nudity_floor: float = Field(0.8, ge=0, le=1, description="open_nsfw probability at which a photo is nudity")
    nudity_region_floor: float = Field(0.8, ge=0, le=1, description="NudeNet score at which an exposed region counts")
    personal_data: str = Field("presidio", description="personal data in the text read: presidio or off")
    analysis_base_url: str = Field("https://api.openai.com/v1", description="openai: the chat-completions base URL "
                                   "(Azure: https://<resource>.openai.azure.com/openai/v1; Ollama: "
                                   "http://127.0.0.1:11434/v1)")
    analysis_model: str = Field("gpt-4o-mini", description="openai: the model; bedrock: the model id, e.g. "
                                                            "anthropic.claude-3-haiku-20240307-v1:0")
    analysis_api_key: SecretStr | None = Field(None, description="openai: the provider's API key (never logged)")
    analysis_region: str | None = Field(None, description="bedrock: the AWS region (credentials: the usual AWS "
                                                          "variables or profile)")
    analysis_temperature: float = Field(0.2, ge=0, le=2, description="hosted providers: sampling temperature")
    analysis_max_tokens: int = Field(1024, ge=16, description="hosted providers: most tokens of one answer")
    analysis_timeout_s: float = Field(60.0, gt=0, description="hosted providers: seconds one call may take")
    analysis_max_retries: int = Field(3, ge=0, description="hosted providers: retries of a 429 / 5xx / timeout")
    analysis_prompts_dir: Path | None = Field(None, description="folder with describe.txt / sensitive.txt / labels.txt "
                                                                "/ receipt.txt overriding the built-in prompts")

    # --- receipts -----------------------------------------------------------------------------------
    receipts_dir: Path | None = Field(None, description="receipts in the SROIE layout (key/, box/, img/) that "
                                                        "`make train-receipts` trains the learned extractor on")
    receipt_extractor: Literal["auto", "learned", "rules", "openai", "bedrock"] = Field(
        "auto", description="auto: the registered champion (receipt-extractor@champion) when there is one, else the "
                            "rules; learned: the champion (an error without one); rules: keyword and pattern rules; "
                            "openai / bedrock: a hosted vision-language model reads the photo (the ANALYSIS_* "
                            "settings: base URL, model, key, temperature)")
    receipt_langs: str = Field(
        "eng", pattern=r"^[a-z_]{3,}(\+[a-z_]{3,})*$",
        description="the languages of your receipts: eng (RapidOCR, which reads English and Chinese) or Tesseract's "
                    "language codes (kor+eng: Tesseract, one column of text; tesseract-ocr-<lang> packages)")

    # --- indexing and serving ------------------------------------------------------------------
    batch_size: int = Field(16, ge=1, description="images per indexing batch")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="upload size cap in bytes")
    max_image_pixels: int = Field(40_000_000, ge=1, description="decoded image pixel cap (w*h)")
    index_max_bytes: int = Field(200 * 1024 * 1024, ge=1, description="file size cap when indexing")
    # below Pillow's hard stop (2 x Image.MAX_IMAGE_PIXELS = 178,956,970 pixels)
    index_max_pixels: int = Field(150_000_000, ge=1, description="pixel cap when indexing (camera photos are big)")
    # --- ingest: originals, queue, workers ------------------------------------------------------
    storage_root: str = Field("data/originals", description="where uploaded originals are stored, content-addressed "
                                                             "by sha256: a folder or gs://bucket/prefix")
    scan_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="server folders POST /api/collections/scan may read (comma separated); "
                                          "empty = scanning is off")
    queue_max_depth: int = Field(10_000, ge=1, description="queued indexing jobs above which uploads get 503 + "
                                                            "Retry-After (follow-up OCR jobs do not count)")
    max_files_per_upload: int = Field(200, ge=1, description="files accepted in one POST /api/images")
    worker_concurrency: int = Field(8, ge=1, description="jobs one worker process holds at once; their images are "
                                                          "detected and embedded together, in one batch")
    worker_max_attempts: int = Field(5, ge=1, description="attempts of an indexing job before it is failed")
    worker_retry_wait: int = Field(2, ge=0, description="exponential retry backoff base, seconds (2, 4, 8, …)")
    worker_heartbeat: float = Field(5.0, gt=0, description="seconds between a worker's heartbeats")
    worker_stalled_after: float = Field(30.0, gt=0, description="a job whose worker sent no heartbeat for this many "
                                                                 "seconds is run again by another worker")
    worker_metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port of a worker; 0 = off")
    worker_metrics_ports: int = Field(1, ge=1, le=1000, description="ports tried from WORKER_METRICS_PORT when it is "
                                                                     "taken (several workers on one host network)")
    worker_metrics_sd_dir: Path | None = Field(None, description="folder where each worker writes its Prometheus "
                                                                 "scrape target (file_sd_configs)")
    worker_metrics_address: str = Field("127.0.0.1", description="the address Prometheus scrapes a worker at")
    worker_ready_file: Path | None = Field(None, description="a file the worker writes its metrics port to once "
                                                             "its models are loaded (a container's health check)")
    enrich: Literal["queue", "inline"] = Field(
        "queue", description="where the queue workers read text in photos (OCR): queue = a follow-up job once the "
                             "photo is searchable (its objects, tags and vectors do not wait for OCR), inline = in "
                             "the indexing job itself")
    enrich_concurrency: int = Field(1, ge=1, description="enrichment jobs (OCR) one worker process holds at once, "
                                                          "besides its WORKER_CONCURRENCY indexing jobs")
    index_refresh_seconds: float = Field(5.0, gt=0, description="how often the API re-checks its FAISS indexes "
                                                                 "against Postgres besides LISTEN/NOTIFY")

    max_concurrent_image_requests: int = Field(4, ge=1, description="image searches, upload checks, thumbnails and "
                                                                     "crops decoded at once per API process")
    max_concurrent_text_searches: int = Field(
        default_factory=usable_cpus, ge=1,
        description="text searches at once per API process (empty: the CPUs it may use; more at once only queue for "
                    "the GIL, and slow /api/health)")
    health_max_age: float = Field(2.0, ge=0, description="/api/health's counts, labels and queue depth are at most "
                                                        "this old (refreshed in the background; 0 = every call)")
    busy_wait_seconds: float = Field(2.0, ge=0, description="how long a request waits for a free slot before "
                                                            "503 + Retry-After")

    # --- access --------------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="keys accepted in X-API-Key for writes (comma separated); empty = "
                                          "writes are refused")
    api_keys_file: Path | None = Field(None, description="a file of keys (comma or newline separated) read when "
                                                          "API_KEYS is empty; the compose `init` step generates one")
    require_key_for_reads: bool = Field(False, description="reads (search, images, tasks) need a key too")

    api_url: str = Field("http://localhost:8000", description="where the Streamlit page finds the API")
    api_key: SecretStr | None = Field(None, description="the key the Streamlit page sends when adding photos "
                                                        "(one of API_KEYS); the page can also ask for it")
    public_url: str = Field("", description="URL prefix for image links in API results; empty = relative")

    @model_validator(mode="after")
    def _keys_from_file(self) -> "Settings":
        """API_KEYS (and the page's API_KEY) from API_KEYS_FILE when they are not set and the file exists."""
        f = self.api_keys_file
        if not self.api_keys and f is not None and f.is_file():
            self.api_keys = [SecretStr(k.strip()) for k in f.read_text().replace("\n", ",").split(",") if k.strip()]
        if self.api_key is None and self.api_keys and f is not None:
            self.api_key = self.api_keys[0]
        return self

    @field_validator("spaces", "api_keys", "scan_roots", mode="before")
    @classmethod
    def _split_spaces(cls, v: object) -> object:
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("spaces")
    @classmethod
    def _known_spaces(cls, v: list[str]) -> list[str]:
        """Known names only, at least one, duplicates dropped."""
        unknown = sorted(set(v) - set(KNOWN_SPACES))
        if unknown:
            raise ValueError(f"unknown embedding space(s) {unknown}; choose from {list(KNOWN_SPACES)}")
        if not v:
            raise ValueError("SPACES is empty; activate at least one of " + ", ".join(KNOWN_SPACES))
        return list(dict.fromkeys(v))

    @field_validator("ocr")
    @classmethod
    def _known_ocr(cls, v: str) -> str:
        """A name of the registry `OCR_ENGINES`."""
        return OCR_ENGINES.get(v).name

    @field_validator("tagger")
    @classmethod
    def _known_tagger(cls, v: str) -> str:
        """A name of the registry `TAGGERS`."""
        return TAGGERS.get(v).name

    @field_validator("faces", "nudity", "personal_data", "analysis_provider")
    @classmethod
    def _known_analyser(cls, v: str, info) -> str:
        """A name of its registry (`FACE_DETECTORS`, `NUDITY_MODELS`, `PERSONAL_DATA`, `ANALYSIS_PROVIDERS`)."""
        registry = {"faces": FACE_DETECTORS, "nudity": NUDITY_MODELS, "personal_data": PERSONAL_DATA,
                    "analysis_provider": ANALYSIS_PROVIDERS}[info.field_name]
        return registry.get(v).name


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment and `.env`)."""
    return Settings()
