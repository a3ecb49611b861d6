-- Chorus schema, version 11: live token streaming (issue 16).
-- stream_events: what run readers (SSE clients, `chorus run --follow`, RunHandle.stream) see
-- while a run works: each LLM call's start, its text as the model writes it, its end, and the
-- run's end. Written by chorus.call_llm (chorus/streaming/publisher.py) and chorus.finish_run,
-- read by chorus/streaming/reader.py, swept CHORUS_STREAM_RETENTION_HOURS after the run ends.
-- Nothing here is the durable result: that is the completed activity's, in the history.
--
-- Ids are the event ids clients resume from (SSE Last-Event-ID). A reader asks for
-- `id > last seen`, so within one run ids must become visible in id order, or a reader could
-- see id 11, move its cursor past 10 and never see it. Writers of one run (parallel branches,
-- on any worker) therefore append through chorus_stream_append, which takes a transaction
-- advisory lock on the run before the ids are drawn: per run, commit order is id order.

CREATE TABLE stream_events (
    id           bigserial PRIMARY KEY,
    -- The top-level run's workflow id (a child workflow's events are its root run's).
    run_id       text NOT NULL,
    -- The workflow that called the LLM (a child workflow for nested steps).
    workflow_id  text NOT NULL,
    -- One LLM call, unique in the run: '<workflow id>/<temporal run id>/<activity id>';
    -- NULL for run_finished.
    step         text,
    agent        text,
    activity_id  text,
    attempt      integer,
    kind         text NOT NULL CHECK (kind IN (
        'step_started', 'attempt_restarted', 'token', 'step_completed', 'step_failed',
        'run_finished')),
    text         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stream_events_run_idx ON stream_events (run_id, id);
-- The retention sweep finds finished runs here (one small row per run), and old rows of runs
-- that never finished (terminated from the Temporal CLI) with the BRIN index: ids and times
-- grow together, so it stays a few pages and costs inserts next to nothing.
CREATE INDEX stream_events_finished_idx ON stream_events (created_at) WHERE kind = 'run_finished';
CREATE INDEX stream_events_created_brin ON stream_events USING brin (created_at);

-- Append events of one step (or the run) in order and wake the readers: one round trip.
-- p_kinds[i]/p_texts[i] is the i-th event. The NOTIFY (channel chorus_stream, payload the run
-- id) is delivered when the caller's transaction commits, with the rows.
-- Returns the id of the last event written.
CREATE FUNCTION chorus_stream_append(
    p_run_id text, p_workflow_id text, p_step text, p_agent text, p_activity_id text,
    p_attempt integer, p_kinds text[], p_texts text[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
BEGIN
    -- (7201338, hash of the run): one writer of a run at a time, until commit.
    PERFORM pg_advisory_xact_lock(7201338, hashtext(p_run_id));
    WITH written AS (
        INSERT INTO stream_events
            (run_id, workflow_id, step, agent, activity_id, attempt, kind, text)
        SELECT p_run_id, p_workflow_id, p_step, p_agent, p_activity_id, p_attempt, e.kind,
            e.text
        FROM unnest(p_kinds, p_texts) WITH ORDINALITY AS e(kind, text, n)
        ORDER BY e.n
        RETURNING id
    )
    SELECT max(id) INTO v_last FROM written;
    PERFORM pg_notify('chorus_stream', p_run_id);
    RETURN v_last;
END
$$;
