-- capsim verifier schema, SQLite, version 5: keyed seals of audit records. One row per sealed
-- record (seq of cap_audit): the id of the key that sealed it and the seal, an HMAC-SHA-256
-- over the record's seq and chained hash (capsim.verifier.audit). Written in the same
-- transaction as the record; insert-only, like cap_audit. The key is never in the database.
-- (Version 4 is another release's number; the runner applies the releases it ships in order.)

CREATE TABLE cap_audit_seal (
    seq    INTEGER PRIMARY KEY CHECK (seq >= 1),
    key_id TEXT NOT NULL,
    seal   BLOB NOT NULL CHECK (length(seal) BETWEEN 16 AND 64)
);

CREATE TRIGGER cap_audit_seal_no_update BEFORE UPDATE ON cap_audit_seal
BEGIN
    SELECT RAISE(ABORT, 'cap_audit_seal is append-only');
END;

CREATE TRIGGER cap_audit_seal_no_delete BEFORE DELETE ON cap_audit_seal
BEGIN
    SELECT RAISE(ABORT, 'cap_audit_seal is append-only');
END;
