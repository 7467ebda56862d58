-- Backup jobs run as the tenant's own login role (least privilege): they record
-- and prune their backups in platform.backups, and row-level security keeps each
-- role to its own client's rows. The platform's admin role owns the table and is
-- not subject to the policy.

-- The client whose login role opened this session (`tenant_<name>`, '-' → '_').
-- SECURITY DEFINER: tenant roles cannot read platform.clients themselves.
CREATE FUNCTION platform.session_client_id() RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, platform
AS $$
    SELECT id FROM platform.clients
    WHERE 'tenant_' || replace(name, '-', '_') = session_user AND deleted_at IS NULL
$$;
REVOKE ALL ON FUNCTION platform.session_client_id() FROM PUBLIC;

ALTER TABLE platform.backups ENABLE ROW LEVEL SECURITY;
CREATE POLICY backups_of_session_client ON platform.backups
    USING (client_id = platform.session_client_id())
    WITH CHECK (client_id = platform.session_client_id());
