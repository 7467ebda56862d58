-- Thousands of tenants: the claim walks the open events oldest first and stops
-- at the first one whose sender is claimable (never a scan of the whole backlog
-- under the tenant's claim lock), and the backlog's depth and oldest age are
-- read from the same index.
CREATE INDEX inbox_open ON inbox (id) INCLUDE (received_at) WHERE status IN ('pending', 'processing');
