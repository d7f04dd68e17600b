-- capsim verifier schema, PostgreSQL, version 1: credentials, operations, the acceptance
-- ledger, recorded request outcomes, the hash-chained audit and settings (verifier.md §5).
-- Times are timestamptz (UTC); binary values bytea; enums are stored by value.

CREATE TABLE cap_credential (
    credential_id         text PRIMARY KEY,
    user_id               text NOT NULL,
    customer_id           text NOT NULL,
    state                 text NOT NULL CHECK (state IN
                              ('pending', 'active', 'suspended', 'blocked', 'lost', 'revoked', 'replaced')),
    key_ref               text NOT NULL,
    pan_token             text NOT NULL,
    pan_last4             text NOT NULL,
    psn                   text NOT NULL,
    profile               jsonb NOT NULL,
    created_at            timestamptz NOT NULL,
    last_atc              integer NOT NULL DEFAULT -1 CHECK (last_atc BETWEEN -1 AND 65535),
    fail_count            integer NOT NULL DEFAULT 0 CHECK (fail_count >= 0),
    max_fail              integer NOT NULL DEFAULT 5 CHECK (max_fail >= 1),
    locked_until          timestamptz,
    lock_escalations      integer NOT NULL DEFAULT 0 CHECK (lock_escalations >= 0),
    escalation_started_at timestamptz,
    parked_atc            integer CHECK (parked_atc BETWEEN 0 AND 65535),
    parked_at             timestamptz,
    replaces              text,
    replaced_by           text,
    label                 text NOT NULL DEFAULT '',
    version               bigint NOT NULL DEFAULT 1 CHECK (version >= 1)
);
CREATE INDEX cap_credential_user_idx ON cap_credential (user_id);
CREATE INDEX cap_credential_pan_idx ON cap_credential (pan_token);

CREATE TABLE cap_operation (
    operation_id       text PRIMARY KEY,
    credential_id      text NOT NULL,
    mode               text NOT NULL CHECK (mode IN ('identify', 'respond', 'sign', 'tds')),
    challenge          text NOT NULL,
    txn_digest         bytea NOT NULL,
    created_at         timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    amount_minor       bigint,
    currency           text,
    payee              text,
    tds_fields         jsonb NOT NULL DEFAULT '[]',
    batch              jsonb NOT NULL DEFAULT '[]',
    reference_supplied boolean NOT NULL DEFAULT false,
    payment            boolean NOT NULL DEFAULT false,
    attempts           integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts       integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    consumed_at        timestamptz
);
CREATE INDEX cap_operation_credential_idx ON cap_operation (credential_id, operation_id);

-- The ledger: one row per accepted code. The constraints make a double accept impossible
-- even if the service logic erred (verifier.md §5).
CREATE TABLE cap_acceptance (
    credential_id text NOT NULL,
    atc           integer NOT NULL CHECK (atc BETWEEN 0 AND 65535),
    mode          text NOT NULL,
    request_id    text NOT NULL UNIQUE,
    accepted_at   timestamptz NOT NULL,
    operation_id  text UNIQUE,
    txn_digest    bytea NOT NULL DEFAULT '\x',
    PRIMARY KEY (credential_id, atc)
);

-- Recorded outcome of each request id, for idempotent retries (V23, V24).
CREATE TABLE cap_request (
    request_id  text PRIMARY KEY,
    outcome     text NOT NULL CHECK (outcome IN ('accept', 'reject', 'temporary')),
    recorded_at timestamptz NOT NULL,
    acceptance  jsonb
);

-- Append-only, hash-chained audit (V37-V39). cap_audit_head holds the chain's tip; an
-- appender locks it FOR UPDATE as the last lock of its transaction.
CREATE TABLE cap_audit (
    seq           bigint PRIMARY KEY CHECK (seq >= 1),
    at            timestamptz NOT NULL,
    event         text NOT NULL,
    outcome       text NOT NULL,
    reason        text NOT NULL DEFAULT '',
    request_id    text,
    credential_id text,
    operation_id  text,
    mode          text,
    atc           integer,
    txn_digest    bytea NOT NULL DEFAULT '\x',
    node          text NOT NULL DEFAULT '',
    duration_us   bigint NOT NULL DEFAULT 0,
    details       jsonb NOT NULL DEFAULT '{}',
    prev_hash     bytea NOT NULL CHECK (length(prev_hash) = 32),
    record_hash   bytea NOT NULL CHECK (length(record_hash) = 32)
);
CREATE TABLE cap_audit_head (
    id          integer PRIMARY KEY CHECK (id = 1),
    seq         bigint NOT NULL,
    record_hash bytea NOT NULL
);
INSERT INTO cap_audit_head (id, seq, record_hash) VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION cap_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cap_audit is append-only';
END
$$;
CREATE TRIGGER cap_audit_no_update BEFORE UPDATE OR DELETE ON cap_audit
    FOR EACH ROW EXECUTE FUNCTION cap_audit_append_only();
CREATE TRIGGER cap_audit_no_truncate BEFORE TRUNCATE ON cap_audit
    FOR EACH STATEMENT EXECUTE FUNCTION cap_audit_append_only();

CREATE TABLE cap_setting (
    name  text PRIMARY KEY,
    value text NOT NULL
);
