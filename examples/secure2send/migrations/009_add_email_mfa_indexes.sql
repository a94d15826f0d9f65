-- no-transaction
-- CREATE INDEX CONCURRENTLY cannot run inside a transaction block, so this file must be applied outside one; it avoids locking users/email_mfa_codes against writes during login.
-- If a concurrent build fails it leaves an INVALID index behind; drop it and re-run this file.

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_email_mfa_codes_user_id_created_at
    ON email_mfa_codes (user_id, created_at DESC);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_email_mfa_codes_unused_expires_at
    ON email_mfa_codes (expires_at)
    WHERE used_at IS NULL;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_mfa_email_enabled
    ON users (mfa_email_enabled)
    WHERE mfa_email_enabled = true;
