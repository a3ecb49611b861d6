-- Chorus schema, version 5: provider requests per minute enforced across every worker by a
-- GCRA (generic cell rate algorithm) in PostgreSQL instead of the Temporal server's task queue
-- rate, which delayed every dispatch (chorus/limits.py).

-- One row per rate-limited provider, created by its first call. tat: the theoretical arrival
-- time of the next call, on the database clock (clock_timestamp()) that every worker shares.
CREATE TABLE llm_rate_limits (
    provider  text PRIMARY KEY,
    tat       timestamptz NOT NULL
);
