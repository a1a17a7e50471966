-- Words the index understands: ImageNet tags per item, text read in each image, a lexical document per item.
-- items.keywords: the words an item is found by confidently (its detected label and synonyms, its sure tags with
--   their synonyms and hypernyms, and for the whole image the OCR text); items.keywords_weak: the words of its
--   less sure tags (they rank, they do not make a hit confident); items.lexical: their tsvector under the
--   'simple' configuration (no stemming, no stop words: Korean and other scripts tokenise on spaces too),
--   weight A for keywords, B for keywords_weak.
-- images.enrichment: the tagger/OCR configuration that built the image's tags, OCR text and descriptions
--   (NULL = before tags existed); an indexing run re-enriches images whose value differs.
CREATE TABLE IF NOT EXISTS tags (
    item_id BIGINT NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    source  TEXT NOT NULL,
    label   TEXT NOT NULL,
    score   REAL NOT NULL CHECK (score >= 0 AND score <= 1),
    PRIMARY KEY (item_id, source, label)
);
CREATE INDEX IF NOT EXISTS tags_label ON tags (label);
CREATE TABLE IF NOT EXISTS ocr_lines (
    id         BIGSERIAL PRIMARY KEY,
    image_id   BIGINT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    engine     TEXT NOT NULL,
    text       TEXT NOT NULL,
    confidence REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ocr_lines_image_id ON ocr_lines (image_id);
ALTER TABLE images ADD COLUMN IF NOT EXISTS ocr_text TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN IF NOT EXISTS enrichment TEXT;
ALTER TABLE items ADD COLUMN IF NOT EXISTS keywords TEXT NOT NULL DEFAULT '';
ALTER TABLE items ADD COLUMN IF NOT EXISTS keywords_weak TEXT NOT NULL DEFAULT '';
UPDATE items SET keywords = coalesce(label, '') WHERE keywords = '';
ALTER TABLE items ADD COLUMN IF NOT EXISTS lexical tsvector
    GENERATED ALWAYS AS (setweight(to_tsvector('simple'::regconfig, keywords), 'A')
                         || setweight(to_tsvector('simple'::regconfig, keywords_weak), 'B')) STORED;
CREATE INDEX IF NOT EXISTS items_lexical ON items USING gin (lexical);
