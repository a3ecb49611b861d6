-- Chorus schema, version 4: budgets enforced across every worker by reserving each paid LLM
-- call's worst-case cost before it is made, and settling it to the real cost afterwards.

-- Limits in USD. scope: 'daily' (all spend per UTC day), 'run' (each top-level run),
-- 'agent:<name>' (one agent's spend per UTC day). alert_usd: only for 'daily'.
CREATE TABLE budgets (
    scope       text PRIMARY KEY CHECK (scope IN ('daily', 'run') OR scope LIKE 'agent:%'),
    limit_usd   numeric(14, 6) NOT NULL CHECK (limit_usd >= 0),
    alert_usd   numeric(14, 6) CHECK (alert_usd >= 0),
    updated_by  text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Running totals per budget period: 'day:2026-11-21', 'agent:writer:2026-11-21', 'run:<id>'.
CREATE TABLE budget_spend (
    period        text PRIMARY KEY,
    reserved_usd  numeric(14, 8) NOT NULL DEFAULT 0,
    spent_usd     numeric(14, 8) NOT NULL DEFAULT 0,
    alerted_at    timestamptz
);

-- One reservation per LLM activity (workflow id + activity id), reused by its retries.
CREATE TABLE budget_reservations (
    workflow_id   text NOT NULL,
    activity_id   text NOT NULL,
    periods       text[] NOT NULL,
    agent         text NOT NULL,
    provider      text NOT NULL,
    model         text NOT NULL,
    reserved_usd  numeric(14, 8) NOT NULL,
    settled_usd   numeric(14, 8),
    state         text NOT NULL CHECK (state IN ('reserved', 'settled', 'released')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, activity_id)
);
CREATE INDEX budget_reservations_open ON budget_reservations (updated_at) WHERE state = 'reserved';
