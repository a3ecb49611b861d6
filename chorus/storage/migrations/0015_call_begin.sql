-- Chorus schema, version 15: a provider call's rate start, budget reservation and whether a
-- reader watches its run, in one round trip (issue 19: three statements on the hot path of
-- every call before).
--
-- chorus_call_begin runs the GCRA step of the provider's llm_rate_limits row (the statement of
-- chorus.storage.provider_rates._RESERVE_START, unchanged) and, when the call may start at
-- once, chorus_budget_reserve (migration 0006) in the same transaction. A call that must wait
-- for the rate reserves no budget here: it sleeps, then reserves with chorus_budget_reserve as
-- before, so waiting for the rate still holds no worst-case reservation. Lock order: the rate
-- row, then the budget period rows in period order; no other transaction takes both, so the
-- order adds no deadlock.
--
-- The statement commits without waiting for the WAL flush (~0.25 ms per call measured on the
-- embedded server): what it writes are holds, not the record. A PostgreSQL crash may lose the
-- last few hundred milliseconds of them: a lost reservation is settled as a call without one
-- (chorus_budget_settle adds the cost once), a lost rate step lets a few more calls start at
-- once. The call's record and its settlement keep synchronous commits.
--
-- o_wait_s: NULL when the start would be more than p_max_wait seconds away (nothing reserved,
-- the rate row unchanged); > 0 when the caller must sleep that long (budget not reserved,
-- o_outcome 'wait'); 0 with chorus_budget_reserve's row otherwise (o_outcome 'skipped' when
-- p_amount is NULL: an unpriced call the settings allow). o_watched: whether a reader watches
-- run p_run_id now (stream_watchers, migration 0014); false when p_run_id is NULL.
CREATE FUNCTION chorus_call_begin(
    p_rate_key text, p_interval float8, p_tolerance float8, p_max_wait float8,
    p_workflow_id text, p_activity_id text, p_scopes text[], p_periods text[],
    p_default_limits numeric[], p_agent text, p_provider text, p_model text, p_amount numeric,
    p_run_id text
) RETURNS TABLE (
    o_wait_s float8, o_outcome text, o_amount numeric, o_scope text, o_period text,
    o_limit numeric, o_committed numeric, o_watched boolean
) LANGUAGE plpgsql AS $$
DECLARE
    v_wait float8;
    v_watched boolean;
BEGIN
    v_watched := p_run_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM stream_watchers WHERE run_id = p_run_id AND until > now());
    -- Transaction-local: the caller's statement is its own transaction.
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO llm_rate_limits AS r (provider, tat)
    VALUES (p_rate_key, clock_timestamp() + make_interval(secs => p_interval))
    ON CONFLICT (provider) DO UPDATE
        SET tat = greatest(r.tat, clock_timestamp()) + make_interval(secs => p_interval)
        WHERE r.tat - make_interval(secs => p_tolerance)
            <= clock_timestamp() + make_interval(secs => p_max_wait)
    RETURNING greatest(0, extract(epoch FROM r.tat - clock_timestamp()) - p_interval
        - p_tolerance)::float8 INTO v_wait;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::float8, 'rate_refused'::text, NULL::numeric, NULL::text,
            NULL::text, NULL::numeric, NULL::numeric, v_watched;
        RETURN;
    END IF;
    IF v_wait > 0 THEN
        RETURN QUERY SELECT v_wait, 'wait'::text, NULL::numeric, NULL::text, NULL::text,
            NULL::numeric, NULL::numeric, v_watched;
        RETURN;
    END IF;
    IF p_amount IS NULL THEN
        RETURN QUERY SELECT 0::float8, 'skipped'::text, NULL::numeric, NULL::text, NULL::text,
            NULL::numeric, NULL::numeric, v_watched;
        RETURN;
    END IF;
    RETURN QUERY SELECT 0::float8, b.o_outcome, b.o_amount, b.o_scope, b.o_period, b.o_limit,
        b.o_committed, v_watched
        FROM chorus_budget_reserve(p_workflow_id, p_activity_id, p_scopes, p_periods,
            p_default_limits, p_agent, p_provider, p_model, p_amount) AS b;
END
$$;
