-- capsim verifier schema, SQLite, version 1: credentials, operations, the acceptance
-- ledger, recorded request outcomes, the hash-chained audit and settings (verifier.md §5).
-- Times are fixed-width UTC ISO-8601 text (YYYY-MM-DDTHH:MM:SS.ffffffZ), so text order is
-- time order; binary values BLOB; JSON values text; enums stored by value.

CREATE TABLE cap_credential (
    credential_id         TEXT PRIMARY KEY,
    user_id               TEXT NOT NULL,
    customer_id           TEXT NOT NULL,
    state                 TEXT NOT NULL CHECK (state IN
                              ('pending', 'active', 'suspended', 'blocked', 'lost', 'revoked', 'replaced')),
    key_ref               TEXT NOT NULL,
    pan_token             TEXT NOT NULL,
    pan_last4             TEXT NOT NULL,
    psn                   TEXT NOT NULL,
    profile               TEXT NOT NULL,
    created_at            TEXT NOT NULL,
    last_atc              INTEGER NOT NULL DEFAULT -1 CHECK (last_atc BETWEEN -1 AND 65535),
    fail_count            INTEGER NOT NULL DEFAULT 0 CHECK (fail_count >= 0),
    max_fail              INTEGER NOT NULL DEFAULT 5 CHECK (max_fail >= 1),
    locked_until          TEXT,
    lock_escalations      INTEGER NOT NULL DEFAULT 0 CHECK (lock_escalations >= 0),
    escalation_started_at TEXT,
    parked_atc            INTEGER CHECK (parked_atc BETWEEN 0 AND 65535),
    parked_at             TEXT,
    replaces              TEXT,
    replaced_by           TEXT,
    label                 TEXT NOT NULL DEFAULT '',
    version               INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1)
) WITHOUT ROWID;
CREATE INDEX cap_credential_user_idx ON cap_credential (user_id);
CREATE INDEX cap_credential_pan_idx ON cap_credential (pan_token);

CREATE TABLE cap_operation (
    operation_id       TEXT PRIMARY KEY,
    credential_id      TEXT NOT NULL,
    mode               TEXT NOT NULL CHECK (mode IN ('identify', 'respond', 'sign', 'tds')),
    challenge          TEXT NOT NULL,
    txn_digest         BLOB NOT NULL,
    created_at         TEXT NOT NULL,
    expires_at         TEXT NOT NULL,
    amount_minor       INTEGER,
    currency           TEXT,
    payee              TEXT,
    tds_fields         TEXT NOT NULL DEFAULT '[]',
    batch              TEXT NOT NULL DEFAULT '[]',
    reference_supplied INTEGER NOT NULL DEFAULT 0 CHECK (reference_supplied IN (0, 1)),
    payment            INTEGER NOT NULL DEFAULT 0 CHECK (payment IN (0, 1)),
    attempts           INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts       INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    consumed_at        TEXT
) WITHOUT ROWID;
CREATE INDEX cap_operation_credential_idx ON cap_operation (credential_id, operation_id);

-- The ledger: one row per accepted code; the constraints make a double accept impossible.
CREATE TABLE cap_acceptance (
    credential_id TEXT NOT NULL,
    atc           INTEGER NOT NULL CHECK (atc BETWEEN 0 AND 65535),
    mode          TEXT NOT NULL,
    request_id    TEXT NOT NULL UNIQUE,
    accepted_at   TEXT NOT NULL,
    operation_id  TEXT UNIQUE,
    txn_digest    BLOB NOT NULL DEFAULT x'',
    PRIMARY KEY (credential_id, atc)
) WITHOUT ROWID;

-- Recorded outcome of each request id, for idempotent retries (V23, V24).
CREATE TABLE cap_request (
    request_id  TEXT PRIMARY KEY,
    outcome     TEXT NOT NULL CHECK (outcome IN ('accept', 'reject', 'temporary')),
    recorded_at TEXT NOT NULL,
    acceptance  TEXT
) WITHOUT ROWID;

-- Append-only, hash-chained audit (V37-V39).
CREATE TABLE cap_audit (
    seq           INTEGER PRIMARY KEY CHECK (seq >= 1),
    at            TEXT NOT NULL,
    event         TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    request_id    TEXT,
    credential_id TEXT,
    operation_id  TEXT,
    mode          TEXT,
    atc           INTEGER,
    txn_digest    BLOB NOT NULL DEFAULT x'',
    node          TEXT NOT NULL DEFAULT '',
    duration_us   INTEGER NOT NULL DEFAULT 0,
    details       TEXT NOT NULL DEFAULT '{}',
    prev_hash     BLOB NOT NULL CHECK (length(prev_hash) = 32),
    record_hash   BLOB NOT NULL CHECK (length(record_hash) = 32)
);
CREATE TRIGGER cap_audit_no_update BEFORE UPDATE ON cap_audit
BEGIN
    SELECT RAISE(ABORT, 'cap_audit is append-only');
END;
CREATE TRIGGER cap_audit_no_delete BEFORE DELETE ON cap_audit
BEGIN
    SELECT RAISE(ABORT, 'cap_audit is append-only');
END;

CREATE TABLE cap_setting (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
