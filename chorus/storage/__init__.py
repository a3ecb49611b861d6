"""PostgreSQL storage: the connection pool, the migrations and every SQL statement Chorus runs.

Callers (activities, the SDK, the worker's probes and metrics) call functions here; no other
package holds SQL.
"""
