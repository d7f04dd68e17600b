-- capsim verifier schema, PostgreSQL, version 5: keyed seals of audit records. One row per
-- sealed record (seq of cap_audit): the id of the key that sealed it and the seal, an
-- HMAC-SHA-256 over the record's seq and chained hash (capsim.verifier.audit). The store
-- inserts it in the COMMIT round trip of the record's transaction. Insert-only: the same
-- append-only trigger function as cap_audit refuses UPDATE, DELETE and TRUNCATE. The key is
-- never in the database.
-- (Version 4 is another release's number; the runner applies the releases it ships in order.)

CREATE TABLE cap_audit_seal (
    seq    bigint PRIMARY KEY CHECK (seq >= 1),
    key_id text NOT NULL,
    seal   bytea NOT NULL CHECK (length(seal) BETWEEN 16 AND 64)
);

CREATE TRIGGER cap_audit_seal_no_update BEFORE UPDATE OR DELETE ON cap_audit_seal
    FOR EACH ROW EXECUTE FUNCTION cap_audit_append_only();
CREATE TRIGGER cap_audit_seal_no_truncate BEFORE TRUNCATE ON cap_audit_seal
    FOR EACH STATEMENT EXECUTE FUNCTION cap_audit_append_only();
