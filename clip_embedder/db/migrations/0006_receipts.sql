-- The household ledger (issue "Receipts → ledger"): receipts read from photos, their items, the categories a
-- receipt is filed under (keyword rules a user can edit), and the audit of user corrections.

-- One row per distinct receipt photo (`sha256` unique: the same photo uploaded twice is one receipt). `original` is
-- its key under STORAGE_ROOT (content-addressed, as an uploaded photo's). The columns hold the current values (the
-- extractor's, or the user's once corrected); `extraction` keeps the extractor's whole answer (the `Receipt` JSON:
-- lines with boxes, confidence per field) unchanged. Amounts are in `currency` (ISO 4217).
CREATE TABLE IF NOT EXISTS receipts (
    id                BIGSERIAL PRIMARY KEY,
    sha256            CHAR(64) NOT NULL UNIQUE,
    original          TEXT NOT NULL,
    file_name         TEXT NOT NULL,
    width             INTEGER NOT NULL,
    height            INTEGER NOT NULL,
    merchant          TEXT,
    address           TEXT,
    date              DATE,
    time              TEXT,
    subtotal          NUMERIC(14, 2),
    tax               NUMERIC(14, 2),
    total             NUMERIC(14, 2),
    currency          CHAR(3),
    payment_method    TEXT,
    category          TEXT,
    category_source   TEXT NOT NULL DEFAULT 'rule' CHECK (category_source IN ('rule', 'user')),
    needs_review      BOOLEAN NOT NULL DEFAULT false,
    review_reasons    TEXT[] NOT NULL DEFAULT '{}',
    -- an earlier receipt with the same merchant, date and total (a possible duplicate: flagged, still counted)
    duplicate_of      BIGINT REFERENCES receipts(id) ON DELETE SET NULL,
    extractor         TEXT NOT NULL,
    extractor_version TEXT,
    extraction        JSONB NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS receipts_date ON receipts (date);
CREATE INDEX IF NOT EXISTS receipts_same ON receipts (upper(merchant), date, total);

CREATE TABLE IF NOT EXISTS receipt_items (
    receipt_id  BIGINT NOT NULL REFERENCES receipts(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    quantity    NUMERIC(14, 3),
    unit_price  NUMERIC(14, 2),
    amount      NUMERIC(14, 2),
    PRIMARY KEY (receipt_id, position)
);

-- A receipt is filed under the category whose keywords its merchant and item names hold most (merchant words count
-- double); none matching: 'other'. (No 서점 among the defaults: a Hangul keyword matches inside words, and branch
-- names such as 강서점 hold it.) Users edit these rules (PUT /api/categories/{name}); receipts whose category a
-- user set are left alone when rules change.
CREATE TABLE IF NOT EXISTS categories (
    name      TEXT PRIMARY KEY,
    keywords  TEXT[] NOT NULL DEFAULT '{}',
    position  INTEGER NOT NULL DEFAULT 100
);
INSERT INTO categories (name, keywords, position) VALUES
    ('groceries', '{MART,SUPERMARKET,HYPERMARKET,GROCER,GROCERY,MINIMARKET,FRESH,VEGETABLE,FRUIT,RICE,MILK,EGG,BREAD,마트,슈퍼,식품,홈플러스,하나로,세븐일레븐,편의점,감자,우유,계란,두부,사과,바나나}', 1),
    ('dining', '{RESTAURANT,CAFE,COFFEE,BAKERY,KOPITIAM,FOOD,KITCHEN,NASI,MEE,CHICKEN,PIZZA,BURGER,TEA,식당,카페,커피,치킨,김밥,파리바게뜨,스타벅스,아메리카노}', 2),
    ('transport', '{PETROL,PETRONAS,SHELL,CALTEX,PARKING,TOLL,TAXI,FUEL,주유,주차,택시}', 3),
    ('household', '{HARDWARE,FURNITURE,ELECTRICAL,HOME,DIY,TRADING,PAINT,LIGHTING,TOOLS,생활,철물,다이소,세제,휴지}', 4),
    ('health', '{PHARMACY,CLINIC,MEDICAL,FARMASI,HOSPITAL,약국,병원,올리브영}', 5),
    ('stationery', '{BOOK,BOOKS,STATIONERY,PRINTING,PAPER,문구,문고,교보,공책,볼펜}', 6),
    ('other', '{}', 99)
ON CONFLICT (name) DO NOTHING;

-- Every user correction: the field, the extractor's value (as it read it), the value before and after this change
-- (JSON). Corrections are the next training data of the learned extractor.
CREATE TABLE IF NOT EXISTS receipt_corrections (
    id          BIGSERIAL PRIMARY KEY,
    receipt_id  BIGINT NOT NULL REFERENCES receipts(id) ON DELETE CASCADE,
    field       TEXT NOT NULL,
    extracted   JSONB,
    before      JSONB,
    after       JSONB,
    corrected_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS receipt_corrections_receipt ON receipt_corrections (receipt_id, id);

-- Receipt photos are ingest tasks too: `kind` says which table a task's bytes end in.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS kind TEXT NOT NULL DEFAULT 'image' CHECK (kind IN ('image', 'receipt'));
-- receipt jobs are found per photo by their lock `receipt:<sha256>`
CREATE INDEX IF NOT EXISTS procrastinate_jobs_receipt_lock ON procrastinate_jobs (lock, id DESC)
    WHERE queue_name = 'enrich' AND lock LIKE 'receipt:%';
