-- Chorus schema, version 14: live stream appends commit without waiting for the WAL flush
-- (issue 19). stream_events rows are a live view for readers, swept after 24 h; the durable
-- result is the completed activity in the workflow's history. A PostgreSQL crash may lose the
-- last few hundred milliseconds of them (never a run's record: every other write keeps
-- synchronous commits), and readers resume from the history's results. Same function as in
-- 0011 otherwise: one round trip per batch, ids in commit order per run, NOTIFY on commit.
CREATE OR REPLACE FUNCTION chorus_stream_append(
    p_run_id text, p_workflow_id text, p_step text, p_agent text, p_activity_id text,
    p_attempt integer, p_kinds text[], p_texts text[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
BEGIN
    -- Transaction-local: the caller's statement is its own transaction.
    PERFORM set_config('synchronous_commit', 'off', true);
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

-- Runs someone is reading live (an SSE client, `chorus run --follow`, RunHandle.stream). An LLM
-- call streams its tokens only while its run has a watcher: streaming costs the worker the
-- provider SDK's chunk parsing and a write every 50 ms (issue 19 measured ~15 ms per call). An
-- unwatched call writes its step_started and step_completed together when it ends, so a reader
-- that comes later still replays every step. Readers refresh `until` while they read.
CREATE TABLE stream_watchers (
    run_id text PRIMARY KEY,
    until  timestamptz NOT NULL
);
