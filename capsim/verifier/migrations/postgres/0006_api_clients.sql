-- capsim verifier schema, PostgreSQL, version 6: API clients of the HTTP service and the
-- shared rate-limit counters. A client's key is stored only as the SHA-256 digest of its
-- secret (capsim.verifier.clients); a customer administrator's client names the user it acts
-- as. One counter row per bucket (a client or a credential): the fixed window (slot) it counts in
-- and the hits so far, so every worker process on the database enforces one limit.

CREATE TABLE cap_client (
    client_id   text PRIMARY KEY,
    name        text NOT NULL,
    scope       text NOT NULL CHECK (scope IN ('operator', 'verification', 'customer-admin')),
    acting_user text,
    key_digest  bytea NOT NULL CHECK (length(key_digest) = 32),
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    version     integer NOT NULL CHECK (version >= 1),
    CHECK ((scope = 'customer-admin') = (acting_user IS NOT NULL))
);

CREATE TABLE cap_rate (
    bucket text PRIMARY KEY,
    slot   bigint NOT NULL,
    hits   bigint NOT NULL CHECK (hits >= 0)
);
