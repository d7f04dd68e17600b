-- capsim verifier schema, SQLite, version 7: certificate credentials (capsim.verifier.certificates).
-- An organisation keeps only a keyed hash of its master code, a user only a keyed hash of its
-- identity number (one identifier per identity and organisation, at most one administrator per
-- organisation). A certificate is nominative: one live (active or blocked) certificate per public
-- key, enforced by a unique index on the SHA-256 of its SubjectPublicKeyInfo. Challenges are
-- single use: consumed by the one accepted signature, closed after max_attempts wrong ones.

CREATE TABLE cap_org (
    org_id        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('supplier', 'customer')),
    master_digest BLOB NOT NULL CHECK (length(master_digest) = 32),
    created_at    TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE cap_org_user (
    user_id    TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    id_digest  BLOB NOT NULL CHECK (length(id_digest) = 32),
    created_at TEXT NOT NULL,
    created_by TEXT,
    disabled   INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    version    INTEGER NOT NULL CHECK (version >= 1)
) WITHOUT ROWID;
CREATE UNIQUE INDEX cap_org_user_identity_idx ON cap_org_user (org_id, id_digest);
CREATE UNIQUE INDEX cap_org_user_admin_idx ON cap_org_user (org_id) WHERE role = 'admin';

CREATE TABLE cap_cert (
    cert_id               TEXT PRIMARY KEY,
    user_id               TEXT NOT NULL,
    org_id                TEXT NOT NULL,
    state                 TEXT NOT NULL CHECK (state IN ('active', 'blocked', 'revoked')),
    spki_digest           BLOB NOT NULL CHECK (length(spki_digest) = 32),
    cert_der              BLOB NOT NULL CHECK (length(cert_der) BETWEEN 1 AND 16384),
    serial                TEXT NOT NULL,
    subject               TEXT NOT NULL,
    not_after             TEXT NOT NULL,
    created_at            TEXT NOT NULL,
    supplementary         INTEGER NOT NULL DEFAULT 0 CHECK (supplementary IN (0, 1)),
    label                 TEXT NOT NULL DEFAULT '',
    fail_count            INTEGER NOT NULL DEFAULT 0 CHECK (fail_count >= 0),
    locked_until          TEXT,
    lock_escalations      INTEGER NOT NULL DEFAULT 0 CHECK (lock_escalations >= 0),
    escalation_started_at TEXT,
    version               INTEGER NOT NULL CHECK (version >= 1)
) WITHOUT ROWID;
CREATE UNIQUE INDEX cap_cert_live_key_idx ON cap_cert (spki_digest) WHERE state IN ('active', 'blocked');
CREATE INDEX cap_cert_user_idx ON cap_cert (user_id, cert_id);
CREATE INDEX cap_cert_org_idx ON cap_cert (org_id, cert_id);

CREATE TABLE cap_cert_challenge (
    challenge_id TEXT PRIMARY KEY,
    purpose      TEXT NOT NULL CHECK (purpose IN ('register', 'operation')),
    org_id       TEXT NOT NULL,
    cert_id      TEXT,
    nonce        BLOB NOT NULL CHECK (length(nonce) = 32),
    txn_digest   BLOB NOT NULL CHECK (length(txn_digest) = 32),
    details      TEXT NOT NULL DEFAULT '[]',
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
    consumed_at  TEXT,
    CHECK ((purpose = 'operation') = (cert_id IS NOT NULL))
) WITHOUT ROWID;
