-- Chorus schema, version 12: a circuit breaker per provider (and optionally per model) shared
-- by every worker (chorus/governance/circuit_breaker.py). Each transition is one statement on
-- the database clock (clock_timestamp()), which every worker shares.

-- One row per provider (model '') or per provider and model (CHORUS_CIRCUIT_PER_MODEL), created
-- by its first counted failure; a provider without a row is closed.
--   state        closed | open | half_open
--   failures     provider outages (5xx, timeouts, connection errors) in the window
--   rate_limits  HTTP 429s in the window (counted only with CHORUS_CIRCUIT_COUNT_429, against
--                the same threshold but separately from outages)
--   window_start start of the counting window (NULL: no failure counted)
--   opened_at    when it last opened
--   probe_at     open: when the next probe call may go; half_open: when the probe in flight
--                stops holding the others back (its worker may have died)
--   probes       probe calls let through since it last closed
--   last_error   the last counted failure's message (provider text, already scrubbed)
CREATE TABLE circuit_breakers (
    provider     text NOT NULL,
    model        text NOT NULL DEFAULT '',
    state        text NOT NULL DEFAULT 'closed'
                 CHECK (state IN ('closed', 'open', 'half_open')),
    failures     integer NOT NULL DEFAULT 0,
    rate_limits  integer NOT NULL DEFAULT 0,
    window_start timestamptz,
    opened_at    timestamptz,
    probe_at     timestamptz,
    probes       integer NOT NULL DEFAULT 0,
    last_error   text,
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (provider, model)
);

-- Count one provider-caused failure (p_kind 'outage' or 'rate_limit') and open the breaker on
-- the p_threshold-th failure of that kind within p_window_s seconds; a failure while half-open
-- (the probe failed) opens it again. Failures while open change nothing (calls admitted before
-- it opened). Returns the state before and after, the counts, and seconds until the next probe.
CREATE FUNCTION chorus_circuit_failure(
    p_provider text, p_model text, p_kind text, p_threshold integer, p_window_s float8,
    p_cooldown_s float8, p_error text
) RETURNS TABLE (
    o_previous text, o_state text, o_failures integer, o_rate_limits integer,
    o_probe_in_s float8
) LANGUAGE plpgsql AS $$
DECLARE
    r circuit_breakers%ROWTYPE;
    v_now timestamptz;
    v_failures integer;
    v_rate_limits integer;
BEGIN
    INSERT INTO circuit_breakers (provider, model) VALUES (p_provider, p_model)
        ON CONFLICT DO NOTHING;
    SELECT * INTO r FROM circuit_breakers
        WHERE provider = p_provider AND model = p_model FOR UPDATE;
    v_now := clock_timestamp();
    IF r.state = 'open' THEN
        RETURN QUERY SELECT r.state, r.state, r.failures, r.rate_limits,
            greatest(0, extract(epoch FROM r.probe_at - v_now))::float8;
        RETURN;
    ELSIF r.state = 'half_open' THEN
        UPDATE circuit_breakers SET state = 'open', opened_at = v_now,
                probe_at = v_now + make_interval(secs => p_cooldown_s), last_error = p_error,
                updated_at = v_now
            WHERE provider = p_provider AND model = p_model;
        RETURN QUERY SELECT 'half_open'::text, 'open'::text, r.failures, r.rate_limits,
            p_cooldown_s;
        RETURN;
    END IF;
    IF r.window_start IS NULL OR v_now >= r.window_start + make_interval(secs => p_window_s) THEN
        r.window_start := v_now;
        r.failures := 0;
        r.rate_limits := 0;
    END IF;
    v_failures := r.failures + CASE WHEN p_kind = 'rate_limit' THEN 0 ELSE 1 END;
    v_rate_limits := r.rate_limits + CASE WHEN p_kind = 'rate_limit' THEN 1 ELSE 0 END;
    IF greatest(v_failures, v_rate_limits) >= p_threshold THEN
        UPDATE circuit_breakers SET state = 'open', failures = v_failures,
                rate_limits = v_rate_limits, window_start = r.window_start, opened_at = v_now,
                probe_at = v_now + make_interval(secs => p_cooldown_s), probes = 0,
                last_error = p_error, updated_at = v_now
            WHERE provider = p_provider AND model = p_model;
        RETURN QUERY SELECT 'closed'::text, 'open'::text, v_failures, v_rate_limits,
            p_cooldown_s;
        RETURN;
    END IF;
    UPDATE circuit_breakers SET failures = v_failures, rate_limits = v_rate_limits,
            window_start = r.window_start, last_error = p_error, updated_at = v_now
        WHERE provider = p_provider AND model = p_model;
    RETURN QUERY SELECT 'closed'::text, 'closed'::text, v_failures, v_rate_limits, 0::float8;
END;
$$;
