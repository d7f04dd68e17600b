-- capsim verifier schema, SQLite, version 3: an index finds the audit records of a request id.
-- (The PostgreSQL release of the same number also extends its audit chain tip row; SQLite has
-- no tip row: its single writer reads the newest record.)

CREATE INDEX cap_audit_request_idx ON cap_audit (request_id);
