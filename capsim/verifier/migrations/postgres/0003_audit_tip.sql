-- capsim verifier schema, PostgreSQL, version 3: the audit chain tip also keeps the previous
-- hash, so that one statement can lock the tip, chain the new record (sha256 in the server)
-- and insert it: the tip row lock, which serialises every audit append, is then held for one
-- round trip plus COMMIT. An index finds the audit records of a request id.

ALTER TABLE cap_audit_head ADD COLUMN prev_hash bytea NOT NULL
    DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'
    CHECK (length(prev_hash) = 32);
UPDATE cap_audit_head h
   SET prev_hash = coalesce((SELECT a.prev_hash FROM cap_audit a WHERE a.seq = h.seq), h.prev_hash);

CREATE INDEX cap_audit_request_idx ON cap_audit (request_id);
