-- capsim verifier schema, PostgreSQL, version 8: the padding rows (capsim.verifier.padding).
-- Rows that stand in for a verification target that does not exist, so that every refusal
-- reads, decodes and writes the same rows as a refusal of a real credential or operation (V30:
-- the same statements, the same rows, the same time): a credential for an unknown credential
-- (with a lock, like the locked card it is compared with), and an operation for an unknown
-- operation with its own credential (without a lock). Their ids contain ':', which no
-- identifier a caller may pass contains; the credentials are blocked (in the
-- one-live-credential-per-card index like a real card, under PAN tokens of their own, so
-- writing one back costs what a real card's write costs), their user and customer are no one's,
-- their key reference names no key, and stores leave them out of every listing. The operation
-- is expired and never consumed. The values are capsim.verifier.padding's rows; rows already
-- there (a database stamped back to an older version) are kept.

INSERT INTO cap_credential (credential_id, user_id, customer_id, state, key_ref, pan_token, pan_last4, psn,
                            profile, created_at, last_atc, fail_count, max_fail, locked_until,
                            lock_escalations, escalation_started_at, label, version)
VALUES ('cr:pad:000000000000', ':padding', ':padding', 'blocked', 'padding:none',
        ':padding:00000000000000000000000', '0000', '00',
        '{"accept_unpadded":false,"aip":"1000","cdol1":"9F02069F03069F1A0295055F2A029A039C019F3704","cvn":10,"display_digits":8,"iad_variants":["060A0A03A48000"],"iaf":"A0","ipb":"00001F00000000000FFFFF00000000008000","key_derivation":"auto","reader_profile":"mc-cap","session_key_method":null,"tree_branch_factor":2,"tree_height":16,"tree_iv":"00000000000000000000000000000000"}'::jsonb,
        '2000-01-01T00:00:00Z', 0, 5, 5, '9999-12-31T00:00:00Z', 1, '2000-01-01T00:00:00Z', '', 1),
       ('cr:pad:000000000001', ':padding', ':padding', 'blocked', 'padding:none',
        ':padding:11111111111111111111111', '0000', '00',
        '{"accept_unpadded":false,"aip":"1000","cdol1":"9F02069F03069F1A0295055F2A029A039C019F3704","cvn":10,"display_digits":8,"iad_variants":["060A0A03A48000"],"iaf":"A0","ipb":"00001F00000000000FFFFF00000000008000","key_derivation":"auto","reader_profile":"mc-cap","session_key_method":null,"tree_branch_factor":2,"tree_height":16,"tree_iv":"00000000000000000000000000000000"}'::jsonb,
        '2000-01-01T00:00:00Z', 0, 0, 5, NULL, 0, NULL, '', 1)
ON CONFLICT DO NOTHING;

INSERT INTO cap_operation (operation_id, credential_id, mode, challenge, txn_digest, created_at, expires_at,
                           tds_fields, batch, reference_supplied, payment, attempts, max_attempts)
VALUES ('op:pad:000000000000', 'cr:pad:000000000001', 'respond', '00000000', decode(repeat('00', 32), 'hex'),
        '2000-01-01T00:00:00Z', '2000-01-01T00:00:00Z', '[]', '[]', false, false, 0, 3)
ON CONFLICT DO NOTHING;
