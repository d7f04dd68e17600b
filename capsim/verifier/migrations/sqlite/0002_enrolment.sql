-- capsim verifier schema, SQLite, version 2: customer accounts, users and single-use
-- activation codes (stored only as SHA-256 digests).

CREATE TABLE cap_customer (
    customer_id TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

CREATE TABLE cap_user (
    user_id     TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at  TEXT NOT NULL,
    created_by  TEXT,
    disabled    INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
) WITHOUT ROWID;
CREATE INDEX cap_user_customer_idx ON cap_user (customer_id, user_id);

CREATE TABLE cap_activation (
    code_digest BLOB PRIMARY KEY CHECK (length(code_digest) BETWEEN 1 AND 64),
    user_id     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0)
) WITHOUT ROWID;
CREATE INDEX cap_activation_user_idx ON cap_activation (user_id);
