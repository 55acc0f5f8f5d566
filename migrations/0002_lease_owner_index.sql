-- A node's claim first returns the due rows it already holds. Without an
-- index on the holder that part walked the whole pending queue whenever the
-- node held fewer rows than it asked for, which is the usual case: under
-- load, with a backlog of thousands, each claim cost 1.5-2.3 ms of server
-- time, half of PostgreSQL's time per delivered message
-- (docs/performance.md, "Several nodes on one PostgreSQL").
CREATE INDEX outbox_held ON outbox (lease_owner, due_ms, id)
    WHERE state = 'pending' AND lease_owner IS NOT NULL;
CREATE INDEX jobs_held ON jobs (lease_owner, due_ms, id)
    WHERE lease_owner IS NOT NULL;
