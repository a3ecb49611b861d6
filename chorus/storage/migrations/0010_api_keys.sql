-- Chorus schema, version 10: API keys of the HTTP API (issue 16), the run that records which key
-- started it, and the per-key daily budget in the fleet-wide budget reservation.

-- One row per key ever issued. A key reads `chorus_<id>_<secret>`; only
-- HMAC-SHA256(CHORUS_API_KEY_SECRET, key) is stored (chorus/governance/api_keys.py says why
-- HMAC and not a slow password hash). Rows are never deleted: runs name their key, and a
-- rotated key points at the key it replaced (rotated_from).
CREATE TABLE api_keys (
    id                text PRIMARY KEY,
    name              text NOT NULL,
    hash              bytea NOT NULL CHECK (octet_length(hash) = 32),
    scopes            text[] NOT NULL,
    budget_daily_usd  numeric(14, 6) CHECK (budget_daily_usd >= 0),
    rpm               integer CHECK (rpm > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT '',
    -- Set by a revocation (now) or a rotation with an overlap window (now + overlap): the key
    -- authenticates until then.
    revoked_at        timestamptz,
    revoked_by        text,
    last_used_at      timestamptz,
    rotated_from      text REFERENCES api_keys (id)
);
-- A name belongs to one key at a time; a revoked (or rotated) key frees it.
CREATE UNIQUE INDEX api_keys_live_name_idx ON api_keys (name) WHERE revoked_at IS NULL;
CREATE INDEX api_keys_name_idx ON api_keys (name, created_at DESC);

-- The name of the API key whose request started the run (NULL: started without one, by the
-- SDK, the CLI or a plain Temporal client). Names survive rotation, ids do not.
ALTER TABLE runs ADD COLUMN api_key text;
CREATE INDEX runs_api_key_idx ON runs (api_key, started_at DESC) WHERE api_key IS NOT NULL;

-- chorus_budget_reserve of version 6, with one change: the limit of a 'key:<name>' scope is the
-- daily budget of the API key of that name (its live key, else the one created last), so a
-- key's limit is read in the same round trip and a change applies to the next call. The
-- budgets table never holds such a scope (its CHECK allows daily, run and agent:<name> only).
CREATE OR REPLACE FUNCTION chorus_budget_reserve(
    p_workflow_id text, p_activity_id text, p_scopes text[], p_periods text[],
    p_default_limits numeric[], p_agent text, p_provider text, p_model text, p_amount numeric
) RETURNS TABLE (
    o_outcome text, o_amount numeric, o_scope text, o_period text, o_limit numeric,
    o_committed numeric
) LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
    v_reserved numeric;
    v_limit numeric;
    v_committed numeric;
    v_sorted text[];
    v_limits numeric[];
BEGIN
    SELECT r.state, r.reserved_usd INTO v_state, v_reserved FROM budget_reservations r
        WHERE r.workflow_id = p_workflow_id AND r.activity_id = p_activity_id FOR UPDATE;
    IF v_state = 'reserved' THEN
        RETURN QUERY SELECT 'held'::text, v_reserved, NULL::text, NULL::text, NULL::numeric,
            NULL::numeric;
        RETURN;
    ELSIF v_state = 'settled' THEN
        RETURN QUERY SELECT 'settled'::text, 0::numeric, NULL::text, NULL::text, NULL::numeric,
            NULL::numeric;
        RETURN;
    END IF;
    -- Each period's limit: an API key's daily budget for 'key:<name>', else the budgets
    -- table's row for its scope, else the caller's default.
    SELECT array_agg(
            CASE WHEN starts_with(d.scope, 'key:') THEN k.budget_daily_usd
                 ELSE coalesce(b.limit_usd, CASE WHEN b.scope IS NULL THEN d.lim END) END
            ORDER BY d.i)
        INTO v_limits
        FROM unnest(p_scopes, p_default_limits) WITH ORDINALITY AS d(scope, lim, i)
        LEFT JOIN budgets b ON b.scope = d.scope
        LEFT JOIN LATERAL (
            SELECT a.budget_daily_usd FROM api_keys a
            WHERE starts_with(d.scope, 'key:') AND a.name = substr(d.scope, 5)
            ORDER BY a.revoked_at IS NULL DESC, a.created_at DESC LIMIT 1
        ) k ON true;
    IF NOT EXISTS (SELECT 1 FROM unnest(v_limits) AS l WHERE l IS NOT NULL) THEN
        -- Read-only so far: no lock is held and the commit needs no WAL flush.
        RETURN QUERY SELECT 'unlimited'::text, 0::numeric, NULL::text, NULL::text,
            NULL::numeric, NULL::numeric;
        RETURN;
    END IF;
    SELECT array_agg(p ORDER BY p) INTO v_sorted FROM unnest(p_periods) AS p;
    INSERT INTO budget_spend (period) SELECT unnest(v_sorted) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM budget_spend s WHERE s.period = ANY(v_sorted) ORDER BY s.period FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_scopes, 1), 0) LOOP
        v_limit := v_limits[i];
        IF v_limit IS NOT NULL THEN
            SELECT s.reserved_usd + s.spent_usd INTO v_committed FROM budget_spend s
                WHERE s.period = p_periods[i];
            IF v_committed + p_amount > v_limit THEN
                RETURN QUERY SELECT 'refused'::text, p_amount, p_scopes[i], p_periods[i],
                    v_limit, v_committed;
                RETURN;
            END IF;
        END IF;
    END LOOP;
    UPDATE budget_spend s SET reserved_usd = s.reserved_usd + p_amount
        WHERE s.period = ANY(v_sorted);
    INSERT INTO budget_reservations (workflow_id, activity_id, periods, agent, provider, model,
            reserved_usd, state)
        VALUES (p_workflow_id, p_activity_id, v_sorted, p_agent, p_provider, p_model, p_amount,
            'reserved')
        ON CONFLICT (workflow_id, activity_id) DO UPDATE SET periods = EXCLUDED.periods,
            reserved_usd = EXCLUDED.reserved_usd, settled_usd = NULL, state = 'reserved',
            updated_at = now();
    RETURN QUERY SELECT 'held'::text, p_amount, NULL::text, NULL::text, NULL::numeric,
        NULL::numeric;
END
$$;
