-- The schema of the batch slice: images, their searchable items, embedding spaces.
-- IF NOT EXISTS: databases created before migrations existed pass through unchanged.
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS images (
    id          BIGSERIAL PRIMARY KEY,
    sha256      CHAR(64) NOT NULL UNIQUE,
    path        TEXT NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    split       TEXT,
    description TEXT NOT NULL,
    detector_sha256 TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS items (
    id       BIGSERIAL PRIMARY KEY,
    image_id BIGINT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    kind     TEXT NOT NULL CHECK (kind IN ('image', 'object')),
    label    TEXT,
    score    REAL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    crop_x1 INTEGER NOT NULL, crop_y1 INTEGER NOT NULL, crop_x2 INTEGER NOT NULL, crop_y2 INTEGER NOT NULL,
    description TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_image_id ON items (image_id);
CREATE INDEX IF NOT EXISTS items_label ON items (label);
CREATE TABLE IF NOT EXISTS spaces (
    name       TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    weights    TEXT NOT NULL,
    dim        INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
