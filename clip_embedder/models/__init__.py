"""The models: the YOLOv5 detector (and the MLflow registry it is served from), the embedders of each embedding
space, the ImageNet tagger, OCR engines, and the runtimes they are exported to. Each kind has one registry
(`clip_embedder.models.registry`) from which settings validation and the lists of names are derived."""
