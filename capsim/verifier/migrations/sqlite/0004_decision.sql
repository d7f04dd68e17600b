-- capsim verifier schema, SQLite, version 4: per-credential state in real columns, request
-- ids bound to the call that first used them, and one live credential per card.
--
-- 1. The ATC of the last issuer script sent to a card moves from the settings table
--    ('issuer-script:<credential id>' keys) into cap_credential.script_atc.
-- 2. cap_request records the method, target and a keyed digest of the presented code(s) of
--    the call that first used each request id. Older rows keep an empty method: they bind
--    to nothing, so their ids can no longer be reused.
-- 3. At most one live (pending, active, suspended, blocked) credential per card (PAN token
--    and PSN). Two live credentials of one card could only arise through a concurrent
--    enrolment race that this version closes; the newer of such a pair is revoked here.

ALTER TABLE cap_credential ADD COLUMN script_atc INTEGER CHECK (script_atc BETWEEN 0 AND 65535);
UPDATE cap_credential
   SET script_atc = (SELECT CAST(s.value AS INTEGER) FROM cap_setting s
                      WHERE s.name = 'issuer-script:' || cap_credential.credential_id
                        AND s.value <> '')
 WHERE EXISTS (SELECT 1 FROM cap_setting s
                WHERE s.name = 'issuer-script:' || cap_credential.credential_id AND s.value <> '');
DELETE FROM cap_setting WHERE name LIKE 'issuer-script:%';

ALTER TABLE cap_request ADD COLUMN method TEXT NOT NULL DEFAULT '';
ALTER TABLE cap_request ADD COLUMN target TEXT NOT NULL DEFAULT '';
ALTER TABLE cap_request ADD COLUMN fingerprint BLOB NOT NULL DEFAULT x'';

UPDATE cap_credential
   SET state = 'revoked', version = version + 1
 WHERE state IN ('pending', 'active', 'suspended', 'blocked')
   AND EXISTS (SELECT 1 FROM cap_credential o
                WHERE o.pan_token = cap_credential.pan_token AND o.psn = cap_credential.psn
                  AND o.state IN ('pending', 'active', 'suspended', 'blocked')
                  AND (o.created_at < cap_credential.created_at
                       OR (o.created_at = cap_credential.created_at
                           AND o.credential_id < cap_credential.credential_id)));
CREATE UNIQUE INDEX cap_credential_live_card_idx ON cap_credential (pan_token, psn)
    WHERE state IN ('pending', 'active', 'suspended', 'blocked');
