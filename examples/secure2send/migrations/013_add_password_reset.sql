-- 013_add_password_reset.sql
-- Self-service password reset. A random token is emailed to the user; only its
-- SHA-256 hash is stored. Tokens are single use and expire after one hour
-- (enforced by the application via expires_at).

CREATE TABLE IF NOT EXISTS password_reset_tokens (
    id          serial PRIMARY KEY,
    user_id     varchar NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  char(64) NOT NULL,
    expires_at  timestamp NOT NULL,
    used_at     timestamp,
    ip_address  varchar(45),
    created_at  timestamp NOT NULL DEFAULT now(),
    CONSTRAINT password_reset_tokens_token_hash_unique UNIQUE (token_hash)
);

CREATE INDEX IF NOT EXISTS idx_password_reset_tokens_user_id ON password_reset_tokens (user_id);

-- Admins can force a reset (e.g. after a suspected compromise).
ALTER TABLE users ADD COLUMN IF NOT EXISTS password_reset_required boolean NOT NULL DEFAULT false;
