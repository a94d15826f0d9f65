-- 019_add_agent_client_relationship.sql
-- Link agents to the merchants (clients) they manage. A client normally has a
-- single active agent, but history is kept by deactivating rows rather than
-- deleting them.

CREATE TABLE IF NOT EXISTS agent_clients (
    id           serial PRIMARY KEY,
    agent_id     varchar NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id    varchar NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    assigned_by  varchar REFERENCES users (id) ON DELETE SET NULL,
    is_active    boolean NOT NULL DEFAULT true,
    assigned_at  timestamp NOT NULL DEFAULT now(),
    unassigned_at timestamp,
    CONSTRAINT agent_clients_agent_client_unique UNIQUE (agent_id, client_id),
    CONSTRAINT agent_clients_not_self CHECK (agent_id <> client_id)
);

CREATE INDEX IF NOT EXISTS idx_agent_clients_agent_id ON agent_clients (agent_id) WHERE is_active;
-- At most one active agent per client.
CREATE UNIQUE INDEX IF NOT EXISTS idx_agent_clients_active_client ON agent_clients (client_id) WHERE is_active;

-- Guard against assigning a non-agent user as the agent, or a non-client as
-- the client (roles are plain varchar, so a FK can't express this).
CREATE OR REPLACE FUNCTION check_agent_client_roles()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_agent_role  varchar;
    v_client_role varchar;
BEGIN
    SELECT role INTO v_agent_role FROM users WHERE id = NEW.agent_id;
    SELECT role INTO v_client_role FROM users WHERE id = NEW.client_id;

    IF v_agent_role IS DISTINCT FROM 'agent' THEN
        RAISE EXCEPTION 'user % is not an agent (role=%)', NEW.agent_id, v_agent_role;
    END IF;
    IF v_client_role IS DISTINCT FROM 'client' THEN
        RAISE EXCEPTION 'user % is not a client (role=%)', NEW.client_id, v_client_role;
    END IF;

    IF NOT NEW.is_active AND NEW.unassigned_at IS NULL THEN
        NEW.unassigned_at := now();
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS agent_clients_check_roles ON agent_clients;
CREATE TRIGGER agent_clients_check_roles
    BEFORE INSERT OR UPDATE ON agent_clients
    FOR EACH ROW EXECUTE FUNCTION check_agent_client_roles();
