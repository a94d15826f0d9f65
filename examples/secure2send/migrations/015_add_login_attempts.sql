-- 015_add_login_attempts.sql
-- Record every login attempt (successful or not) for rate limiting by email
-- and by IP address, and for the security section of the admin dashboard.
-- Replaces the coarse users.failed_login_count counter for rate limiting.

CREATE TABLE IF NOT EXISTS login_attempts (
    id              bigserial PRIMARY KEY,
    email           varchar(255) NOT NULL,
    user_id         varchar REFERENCES users (id) ON DELETE SET NULL,
    ip_address      varchar(45),
    user_agent      text,
    success         boolean NOT NULL,
    failure_reason  varchar(50),      -- 'bad_password', 'locked', 'mfa_failed', 'unknown_user'
    attempted_at    timestamp NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_login_attempts_email_attempted_at ON login_attempts (lower(email), attempted_at DESC);
CREATE INDEX IF NOT EXISTS idx_login_attempts_ip_attempted_at ON login_attempts (ip_address, attempted_at DESC);
CREATE INDEX IF NOT EXISTS idx_login_attempts_user_id ON login_attempts (user_id);
