-- capsim verifier schema, SQLite, version 6: API clients of the HTTP service and the shared
-- rate-limit counters. A client's key is stored only as the SHA-256 digest of its secret
-- (capsim.verifier.clients); a customer administrator's client names the user it acts as.
-- One counter row per bucket (a client or a credential): the fixed window (slot) it counts in and
-- the hits so far, so every worker process on the database enforces one limit.

CREATE TABLE cap_client (
    client_id   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL CHECK (scope IN ('operator', 'verification', 'customer-admin')),
    acting_user TEXT,
    key_digest  BLOB NOT NULL CHECK (length(key_digest) = 32),
    created_at  TEXT NOT NULL,
    revoked_at  TEXT,
    version     INTEGER NOT NULL CHECK (version >= 1),
    CHECK ((scope = 'customer-admin') = (acting_user IS NOT NULL))
) WITHOUT ROWID;

CREATE TABLE cap_rate (
    bucket TEXT PRIMARY KEY,
    slot   INTEGER NOT NULL,
    hits   INTEGER NOT NULL CHECK (hits >= 0)
) WITHOUT ROWID;
