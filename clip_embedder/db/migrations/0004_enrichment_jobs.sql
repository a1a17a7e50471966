-- Follow-up enrichment jobs (OCR) are found per image by their lock `enrich:<sha256>`, newest first: the state an
-- image's `enrichments` reports (queued, running, done, failed). procrastinate indexes `lock` only for running jobs.
CREATE INDEX IF NOT EXISTS procrastinate_jobs_enrich_lock ON procrastinate_jobs (lock, id DESC) WHERE queue_name = 'enrich';
