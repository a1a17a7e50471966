-- What each image holds (POST /api/analyze's answer, stored by the analysis job): one row per image, the analysis as
-- JSON (the `Analysis` schema) beside the columns search filters on. `signature` names the analysers or the hosted
-- provider and model that wrote it: a change of either re-runs the analysis.
CREATE TABLE IF NOT EXISTS analyses (
    image_id    BIGINT PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    signature   TEXT NOT NULL,
    provider    TEXT NOT NULL,
    sensitive   BOOLEAN,
    faces       INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT '',
    analysis    JSONB NOT NULL,
    analysed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS analyses_sensitive ON analyses (image_id) WHERE sensitive;
CREATE INDEX IF NOT EXISTS analyses_faces ON analyses (image_id) WHERE faces > 0;
-- analysis jobs are found per image by their lock `analyse:<sha256>`, as the enrichment jobs are
CREATE INDEX IF NOT EXISTS procrastinate_jobs_analyse_lock ON procrastinate_jobs (lock, id DESC)
    WHERE queue_name = 'enrich' AND lock LIKE 'analyse:%';
