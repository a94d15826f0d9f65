-- 020_add_current_step.sql
-- The merchant application form is a 4-step wizard (business info, documents,
-- processing/bank details, review & sign). Persist the step the merchant is on
-- so the form reopens where they left off.

ALTER TABLE merchant_applications ADD COLUMN IF NOT EXISTS current_step integer NOT NULL DEFAULT 1;

ALTER TABLE merchant_applications DROP CONSTRAINT IF EXISTS merchant_applications_current_step_check;
ALTER TABLE merchant_applications ADD CONSTRAINT merchant_applications_current_step_check
    CHECK (current_step BETWEEN 1 AND 4);

-- Applications already past draft have completed every step.
UPDATE merchant_applications SET current_step = 4 WHERE status <> 'draft' AND current_step <> 4;
