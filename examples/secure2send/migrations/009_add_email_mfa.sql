-- 009_add_email_mfa.sql
-- Email-based MFA: as an alternative to TOTP, a 6-digit code is mailed to the
-- user (via Mailgun) at login. Codes are stored hashed, expire after a few
-- minutes, are single use and lock after too many wrong guesses.

ALTER TABLE users ADD COLUMN IF NOT EXISTS mfa_email_enabled boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN IF NOT EXISTS mfa_preferred_method varchar(10);

ALTER TABLE users DROP CONSTRAINT IF EXISTS users_mfa_preferred_method_check;
ALTER TABLE users ADD CONSTRAINT users_mfa_preferred_method_check
    CHECK (mfa_preferred_method IS NULL OR mfa_preferred_method IN ('totp', 'email'));

-- Existing TOTP users keep TOTP as their preferred method.
UPDATE users SET mfa_preferred_method = 'totp'
WHERE mfa_enabled = true AND mfa_preferred_method IS NULL;

CREATE TABLE IF NOT EXISTS email_mfa_codes (
    id          serial PRIMARY KEY,
    user_id     varchar NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash   varchar(255) NOT NULL,
    purpose     varchar(20) NOT NULL DEFAULT 'login',   -- 'login' | 'enroll' | 'disable'
    attempts    integer NOT NULL DEFAULT 0,
    expires_at  timestamp NOT NULL,
    used_at     timestamp,
    ip_address  varchar(45),
    created_at  timestamp NOT NULL DEFAULT now()
);

-- Indexes for email_mfa_codes and users.mfa_email_enabled are created
-- concurrently in 009_add_email_mfa_indexes.sql.
