#!/bin/sh
# One-shot: create Temporal's two PostgreSQL databases and bring their schemas up to the
# version the pinned temporalio/admin-tools image ships (run by the `temporal-schema` service
# of docker-compose.yml before the server starts; safe to re-run, as Temporal's own setup is).
set -eu

: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${DB_PORT:=5432}"
export SQL_PASSWORD="${POSTGRES_PWD:?}"
SCHEMA_ROOT=/etc/temporal/schema/postgresql/v12

for db in temporal temporal_visibility; do
  case "$db" in
    temporal) dir="$SCHEMA_ROOT/temporal/versioned" ;;
    *) dir="$SCHEMA_ROOT/visibility/versioned" ;;
  esac
  echo "schema: $db"
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$DB_PORT" --db "$db" create
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$DB_PORT" --db "$db" setup-schema -v 0.0
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$DB_PORT" --db "$db" update-schema -d "$dir"
done
echo "schema: done"
