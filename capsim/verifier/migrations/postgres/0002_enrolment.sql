-- capsim verifier schema, PostgreSQL, version 2: customer accounts, users and single-use
-- activation codes (stored only as SHA-256 digests).

CREATE TABLE cap_customer (
    customer_id text PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    name        text NOT NULL DEFAULT ''
);

CREATE TABLE cap_user (
    user_id     text PRIMARY KEY,
    customer_id text NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'user')),
    created_at  timestamptz NOT NULL,
    created_by  text,
    disabled    boolean NOT NULL DEFAULT false
);
CREATE INDEX cap_user_customer_idx ON cap_user (customer_id, user_id);

CREATE TABLE cap_activation (
    code_digest bytea PRIMARY KEY CHECK (length(code_digest) BETWEEN 1 AND 64),
    user_id     text NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0)
);
CREATE INDEX cap_activation_user_idx ON cap_activation (user_id);
