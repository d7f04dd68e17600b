-- capsim verifier schema, PostgreSQL, version 7: certificate credentials (capsim.verifier.certificates).
-- An organisation keeps only a keyed hash of its master code, a user only a keyed hash of its
-- identity number (one identifier per identity and organisation, at most one administrator per
-- organisation). A certificate is nominative: one live (active or blocked) certificate per public
-- key, enforced by a unique index on the SHA-256 of its SubjectPublicKeyInfo. Challenges are
-- single use: consumed by the one accepted signature, closed after max_attempts wrong ones.

CREATE TABLE cap_org (
    org_id        text PRIMARY KEY,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('supplier', 'customer')),
    master_digest bytea NOT NULL CHECK (length(master_digest) = 32),
    created_at    timestamptz NOT NULL
);

CREATE TABLE cap_org_user (
    user_id    text PRIMARY KEY,
    org_id     text NOT NULL,
    role       text NOT NULL CHECK (role IN ('admin', 'user')),
    id_digest  bytea NOT NULL CHECK (length(id_digest) = 32),
    created_at timestamptz NOT NULL,
    created_by text,
    disabled   boolean NOT NULL DEFAULT false,
    version    integer NOT NULL CHECK (version >= 1)
);
CREATE UNIQUE INDEX cap_org_user_identity_idx ON cap_org_user (org_id, id_digest);
CREATE UNIQUE INDEX cap_org_user_admin_idx ON cap_org_user (org_id) WHERE role = 'admin';

CREATE TABLE cap_cert (
    cert_id               text PRIMARY KEY,
    user_id               text NOT NULL,
    org_id                text NOT NULL,
    state                 text NOT NULL CHECK (state IN ('active', 'blocked', 'revoked')),
    spki_digest           bytea NOT NULL CHECK (length(spki_digest) = 32),
    cert_der              bytea NOT NULL CHECK (length(cert_der) BETWEEN 1 AND 16384),
    serial                text NOT NULL,
    subject               text NOT NULL,
    not_after             timestamptz NOT NULL,
    created_at            timestamptz NOT NULL,
    supplementary         boolean NOT NULL DEFAULT false,
    label                 text NOT NULL DEFAULT '',
    fail_count            integer NOT NULL DEFAULT 0 CHECK (fail_count >= 0),
    locked_until          timestamptz,
    lock_escalations      integer NOT NULL DEFAULT 0 CHECK (lock_escalations >= 0),
    escalation_started_at timestamptz,
    version               integer NOT NULL CHECK (version >= 1)
);
CREATE UNIQUE INDEX cap_cert_live_key_idx ON cap_cert (spki_digest) WHERE state IN ('active', 'blocked');
CREATE INDEX cap_cert_user_idx ON cap_cert (user_id, cert_id);
CREATE INDEX cap_cert_org_idx ON cap_cert (org_id, cert_id);

CREATE TABLE cap_cert_challenge (
    challenge_id text PRIMARY KEY,
    purpose      text NOT NULL CHECK (purpose IN ('register', 'operation')),
    org_id       text NOT NULL,
    cert_id      text,
    nonce        bytea NOT NULL CHECK (length(nonce) = 32),
    txn_digest   bytea NOT NULL CHECK (length(txn_digest) = 32),
    details      jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    consumed_at  timestamptz,
    CHECK ((purpose = 'operation') = (cert_id IS NOT NULL))
);
