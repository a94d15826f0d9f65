-- 011_add_esignature_tracking.sql
-- E-signature via DocuSeal: once an application is approved the merchant
-- agreement is sent for signature. Track the DocuSeal submission on the
-- application and keep every webhook event we receive for auditability.

ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS esignature_status varchar(20) NOT NULL DEFAULT 'not_sent';
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS docuseal_submission_id varchar(64);
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS docuseal_template_id varchar(64);
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS esignature_sent_at timestamp;
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS esignature_completed_at timestamp;
ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS signed_document_url text;

ALTER TABLE merchant_applications DROP CONSTRAINT IF EXISTS merchant_applications_esignature_status_check;
ALTER TABLE merchant_applications ADD CONSTRAINT merchant_applications_esignature_status_check
    CHECK (esignature_status IN ('not_sent', 'sent', 'viewed', 'completed', 'declined', 'expired'));

CREATE TABLE IF NOT EXISTS esignature_events (
    id                      serial PRIMARY KEY,
    merchant_application_id varchar REFERENCES merchant_applications (id) ON DELETE CASCADE,
    docuseal_submission_id  varchar(64) NOT NULL,
    event_type              varchar(50) NOT NULL,   -- 'form.viewed', 'form.completed', ...
    event_data              jsonb,
    received_at             timestamp NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS idx_merchant_applications_docuseal_submission_id
    ON merchant_applications (docuseal_submission_id)
    WHERE docuseal_submission_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_esignature_events_application_id ON esignature_events (merchant_application_id);
CREATE INDEX IF NOT EXISTS idx_esignature_events_submission_id ON esignature_events (docuseal_submission_id);
