-- 017_add_extracted_document_data.sql
-- OCR auto-fill (ENABLE_OCR_AUTOFILL): uploaded documents (voided checks,
-- bank statements, IDs, ...) are run through an OCR/LLM extractor and the
-- structured result is stored here to pre-fill the merchant application.

ALTER TABLE documents ADD COLUMN IF NOT EXISTS ocr_status varchar(20) NOT NULL DEFAULT 'not_processed';

ALTER TABLE documents DROP CONSTRAINT IF EXISTS documents_ocr_status_check;
ALTER TABLE documents ADD CONSTRAINT documents_ocr_status_check
    CHECK (ocr_status IN ('not_processed', 'queued', 'processing', 'completed', 'failed', 'skipped'));

CREATE TABLE IF NOT EXISTS extracted_document_data (
    id                      serial PRIMARY KEY,
    document_id             varchar NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    merchant_application_id varchar REFERENCES merchant_applications (id) ON DELETE SET NULL,
    document_type           varchar(50),
    extracted_fields        jsonb NOT NULL DEFAULT '{}'::jsonb,
    confidence              numeric(5, 2),              -- 0.00 - 100.00
    model                   varchar(100),
    applied_to_application  boolean NOT NULL DEFAULT false,
    applied_at              timestamp,
    error_message           text,
    created_at              timestamp NOT NULL DEFAULT now(),
    updated_at              timestamp NOT NULL DEFAULT now(),
    CONSTRAINT extracted_document_data_document_id_unique UNIQUE (document_id)
);

CREATE INDEX IF NOT EXISTS idx_extracted_document_data_application_id ON extracted_document_data (merchant_application_id);
CREATE INDEX IF NOT EXISTS idx_extracted_document_data_fields ON extracted_document_data USING gin (extracted_fields);
CREATE INDEX IF NOT EXISTS idx_documents_ocr_status ON documents (ocr_status);

DROP TRIGGER IF EXISTS extracted_document_data_set_updated_at ON extracted_document_data;
CREATE TRIGGER extracted_document_data_set_updated_at
    BEFORE UPDATE ON extracted_document_data
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
