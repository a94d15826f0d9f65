-- 007_add_mfa_required.sql
-- Allow admins to require MFA for individual users. Users flagged here are
-- forced through MFA enrollment on their next login; the optional deadline
-- gives them a grace period before login is blocked.

ALTER TABLE users ADD COLUMN IF NOT EXISTS mfa_required boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN IF NOT EXISTS mfa_setup_deadline timestamp;

-- Admins handle merchant PII, so they are required from day one.
UPDATE users SET mfa_required = true WHERE role = 'admin' AND mfa_required = false;
