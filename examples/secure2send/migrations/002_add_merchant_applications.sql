-- 002_add_merchant_applications.sql
-- Merchant application system: one application per merchant onboarding,
-- filled in over several steps and then submitted for admin review.
-- Sensitive values (tax id, bank account) are stored encrypted by the app.

CREATE TABLE IF NOT EXISTS merchant_applications (
    id                      varchar PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                 varchar NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status                  varchar(30) NOT NULL DEFAULT 'draft',

    -- Business information
    legal_business_name     varchar(255),
    dba_name                varchar(255),
    business_type           varchar(50),
    tax_id_encrypted        text,
    business_phone          varchar(30),
    business_email          varchar(255),
    website                 varchar(255),
    business_address        varchar(255),
    business_city           varchar(100),
    business_state          varchar(2),
    business_zip            varchar(10),
    years_in_business       integer,
    business_description    text,

    -- Processing profile
    monthly_volume          numeric(14, 2),
    average_ticket          numeric(12, 2),
    high_ticket             numeric(12, 2),

    -- Owners / principal officers (array of objects, SSNs encrypted by the app)
    principal_officers      jsonb NOT NULL DEFAULT '[]'::jsonb,

    -- Settlement bank account
    bank_name               varchar(255),
    routing_number          varchar(9),
    account_number_encrypted text,

    -- Review
    submitted_at            timestamp,
    reviewed_by             varchar REFERENCES users (id) ON DELETE SET NULL,
    reviewed_at             timestamp,
    review_notes            text,

    created_at              timestamp NOT NULL DEFAULT now(),
    updated_at              timestamp NOT NULL DEFAULT now(),

    CONSTRAINT merchant_applications_status_check
        CHECK (status IN ('draft', 'submitted', 'under_review', 'approved', 'rejected'))
);

CREATE INDEX IF NOT EXISTS idx_merchant_applications_user_id ON merchant_applications (user_id);
CREATE INDEX IF NOT EXISTS idx_merchant_applications_status ON merchant_applications (status);

-- Reuse the updated_at trigger function from 001.
DROP TRIGGER IF EXISTS merchant_applications_set_updated_at ON merchant_applications;
CREATE TRIGGER merchant_applications_set_updated_at
    BEFORE UPDATE ON merchant_applications
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
