-- Chorus schema, version 6: budget reserve and settle as server-side functions, so each is one
-- round trip instead of 6-8 statements. The rules are those of chorus/budget.py (version 4):
-- budget rows are locked in period order (one order for every caller: no deadlocks), a
-- reservation is idempotent per (workflow id, activity id), limits come from the budgets table,
-- else from the defaults the caller passes (its settings). Measured in bench/RESULTS.md: the
-- statement-by-statement version cost ~17 ms per LLM call on a loaded 2-core machine.

-- Hold p_amount against every period, or refuse naming the first budget it would pass.
-- p_scopes[i] ('daily', 'run', 'agent:<name>') is the budget of period p_periods[i];
-- p_default_limits[i] applies when the budgets table has no row for that scope (NULL: none).
-- Returns one row: outcome 'held' (o_amount held, possibly by an earlier attempt), 'settled'
-- (an earlier attempt already paid), 'unlimited' (no budget applies to any of the periods:
-- nothing is written or locked, and chorus_budget_settle records the spend after the call) or
-- 'refused' (o_scope/o_period/o_limit/o_committed say why).
CREATE FUNCTION chorus_budget_reserve(
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
    -- Each period's limit: the budgets table's row for its scope, else the caller's default.
    SELECT array_agg(coalesce(b.limit_usd, CASE WHEN b.scope IS NULL THEN d.lim END)
            ORDER BY d.i)
        INTO v_limits
        FROM unnest(p_scopes, p_default_limits) WITH ORDINALITY AS d(scope, lim, i)
        LEFT JOIN budgets b ON b.scope = d.scope;
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

-- Replace a held reservation by the real cost p_cost; without one (the call was 'unlimited',
-- or its reservation was released), add p_cost to p_periods once per (workflow id, activity
-- id): a 'settled' reservation row of 0 USD marks it paid, so a retried settle counts nothing.
-- Returns the daily period whose alert threshold this settlement crossed first (NULL
-- otherwise). The alert threshold is the budgets table's 'daily' row, else p_default_alert.
CREATE FUNCTION chorus_budget_settle(
    p_workflow_id text, p_activity_id text, p_cost numeric, p_default_alert numeric,
    p_periods text[], p_agent text, p_provider text, p_model text
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_periods text[];
    v_reserved numeric;
    v_daily text;
    v_alert numeric;
    v_crossed text;
BEGIN
    UPDATE budget_reservations r SET state = 'settled', settled_usd = p_cost, updated_at = now()
        WHERE r.workflow_id = p_workflow_id AND r.activity_id = p_activity_id
            AND r.state = 'reserved'
        RETURNING r.periods, r.reserved_usd INTO v_periods, v_reserved;
    IF NOT FOUND THEN
        IF p_cost <= 0 THEN
            RETURN NULL;  -- a free call: nothing to count
        END IF;
        SELECT array_agg(p ORDER BY p) INTO v_periods FROM unnest(p_periods) AS p;
        INSERT INTO budget_reservations AS r (workflow_id, activity_id, periods, agent,
                provider, model, reserved_usd, settled_usd, state)
            VALUES (p_workflow_id, p_activity_id, v_periods, p_agent, p_provider, p_model, 0,
                p_cost, 'settled')
            ON CONFLICT (workflow_id, activity_id) DO UPDATE SET periods = EXCLUDED.periods,
                reserved_usd = 0, settled_usd = EXCLUDED.settled_usd, state = 'settled',
                updated_at = now()
            WHERE r.state = 'released';
        IF NOT FOUND THEN
            RETURN NULL;  -- already settled by an earlier attempt
        END IF;
        v_reserved := 0;
        INSERT INTO budget_spend (period) SELECT unnest(v_periods) ON CONFLICT DO NOTHING;
    END IF;
    PERFORM 1 FROM budget_spend s WHERE s.period = ANY(v_periods) ORDER BY s.period FOR UPDATE;
    UPDATE budget_spend s SET reserved_usd = s.reserved_usd - v_reserved,
            spent_usd = s.spent_usd + p_cost
        WHERE s.period = ANY(v_periods);
    SELECT p INTO v_daily FROM unnest(v_periods) AS p WHERE p LIKE 'day:%' LIMIT 1;
    IF v_daily IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT b.alert_usd INTO v_alert FROM budgets b WHERE b.scope = 'daily';
    IF NOT FOUND THEN
        v_alert := p_default_alert;
    END IF;
    IF v_alert IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE budget_spend s SET alerted_at = now()
        WHERE s.period = v_daily AND s.alerted_at IS NULL AND s.spent_usd >= v_alert
        RETURNING s.period INTO v_crossed;
    RETURN v_crossed;
END
$$;
