"""Intake: validated uploads and folder scans (`ingest`), content-addressed originals (`originals`), the durable
queues in PostgreSQL (`queue`: `index`, and `enrich` for the follow-up OCR), the workers that run their jobs
(`worker`) and the supervisor that carries them through database outages (`reconnect`)."""
