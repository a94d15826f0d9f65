-- 003_add_agreement_accepted.sql
-- Record that the merchant accepted the processing agreement / terms before
-- submitting, with enough context (when, from where, which version) to
-- reconstruct consent later.

ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS agreement_accepted boolean NOT NULL DEFAULT false;
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS agreement_accepted_at timestamp;
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS agreement_ip_address varchar(45);
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS agreement_version varchar(20);
