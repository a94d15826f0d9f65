-- 006_add_mfa_support.sql
-- MFA foundation: TOTP (authenticator app) secrets and one-time backup codes.
-- mfa_secret is encrypted with FIELD_ENCRYPTION_KEY by the application;
-- backup codes are stored as bcrypt hashes, one array element per code.

ALTER TABLE users ADD COLUMN IF NOT EXISTS mfa_enabled boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN IF NOT EXISTS mfa_secret text;
ALTER TABLE users ADD COLUMN IF NOT EXISTS mfa_backup_codes text[];
ALTER TABLE users ADD COLUMN IF NOT EXISTS mfa_enabled_at timestamp;
ALTER TABLE users ADD COLUMN IF NOT EXISTS mfa_last_used_at timestamp;
