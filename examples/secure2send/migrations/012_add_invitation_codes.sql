-- 012_add_invitation_codes.sql
-- Registration is invite-only: admins generate invitation codes (optionally
-- bound to an email address) and new users must present one to sign up.

CREATE TABLE IF NOT EXISTS invitation_codes (
    id          serial PRIMARY KEY,
    code        varchar(32) NOT NULL,
    email       varchar(255),                 -- if set, only this address may redeem it
    role        varchar(20) NOT NULL DEFAULT 'client',
    max_uses    integer NOT NULL DEFAULT 1,
    use_count   integer NOT NULL DEFAULT 0,
    expires_at  timestamp,
    is_active   boolean NOT NULL DEFAULT true,
    notes       text,
    created_by  varchar REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamp NOT NULL DEFAULT now(),
    updated_at  timestamp NOT NULL DEFAULT now(),
    CONSTRAINT invitation_codes_code_unique UNIQUE (code),
    CONSTRAINT invitation_codes_role_check CHECK (role IN ('client', 'admin')),
    CONSTRAINT invitation_codes_use_count_check CHECK (use_count >= 0 AND use_count <= max_uses)
);

-- Which code a user registered with.
ALTER TABLE users ADD COLUMN IF NOT EXISTS invitation_code_id integer
    REFERENCES invitation_codes (id) ON DELETE SET NULL;

CREATE INDEX IF NOT EXISTS idx_invitation_codes_active ON invitation_codes (is_active, expires_at);

DROP TRIGGER IF EXISTS invitation_codes_set_updated_at ON invitation_codes;
CREATE TRIGGER invitation_codes_set_updated_at
    BEFORE UPDATE ON invitation_codes
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
