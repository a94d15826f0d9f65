-- 020_add_agent_notes.sql
-- Agents can keep notes on their clients, optionally about a specific
-- merchant application. Internal notes are visible to agents and admins only,
-- never to the merchant.

CREATE TABLE IF NOT EXISTS agent_notes (
    id                      serial PRIMARY KEY,
    agent_id                varchar NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id               varchar NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    merchant_application_id varchar REFERENCES merchant_applications (id) ON DELETE SET NULL,
    note                    text NOT NULL,
    is_internal             boolean NOT NULL DEFAULT true,
    created_at              timestamp NOT NULL DEFAULT now(),
    updated_at              timestamp NOT NULL DEFAULT now(),
    CONSTRAINT agent_notes_note_not_blank CHECK (length(btrim(note)) > 0)
);

CREATE INDEX IF NOT EXISTS idx_agent_notes_client_id_created_at ON agent_notes (client_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_agent_notes_agent_id ON agent_notes (agent_id);
CREATE INDEX IF NOT EXISTS idx_agent_notes_application_id ON agent_notes (merchant_application_id);

DROP TRIGGER IF EXISTS agent_notes_set_updated_at ON agent_notes;
CREATE TRIGGER agent_notes_set_updated_at
    BEFORE UPDATE ON agent_notes
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
