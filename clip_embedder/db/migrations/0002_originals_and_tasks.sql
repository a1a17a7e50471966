-- Uploaded originals and ingest tasks.
-- images.storage: 'file' = `path` is a file on the indexing machine (indexed from a folder);
--                 'originals' = `path` is a content-addressed key under STORAGE_ROOT (an upload).
-- images.file_name: what people see: the upload's name or the path relative to the indexed folder.
ALTER TABLE images ADD COLUMN IF NOT EXISTS storage TEXT NOT NULL DEFAULT 'file'
    CHECK (storage IN ('file', 'originals'));
ALTER TABLE images ADD COLUMN IF NOT EXISTS file_name TEXT;
UPDATE images SET file_name = regexp_replace(path, '^.*/', '') WHERE file_name IS NULL;
ALTER TABLE images ALTER COLUMN file_name SET NOT NULL;

-- One row per uploaded or scanned file. Its status comes from the queue job it points to
-- (procrastinate_jobs); a file whose bytes were already indexed gets no job (status 'succeeded').
CREATE TABLE IF NOT EXISTS tasks (
    id          UUID PRIMARY KEY,
    batch       UUID NOT NULL,
    sha256      CHAR(64) NOT NULL,
    file_name   TEXT NOT NULL,
    job_id      BIGINT,
    status      TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    error       TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tasks_batch ON tasks (batch);
CREATE INDEX IF NOT EXISTS tasks_sha256 ON tasks (sha256);
CREATE INDEX IF NOT EXISTS tasks_job_id ON tasks (job_id);
