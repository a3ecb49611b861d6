#!/bin/sh
# One-shot: wait for the Temporal frontend, create the namespace Chorus uses and register
# Chorus's custom search attributes on it (names and types: chorus/contracts/names.py,
# search_attribute_types()). Run by the `temporal-admin` service of docker-compose.yml; every
# step is skipped when already done, so re-running it is harmless.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
RETENTION="${TEMPORAL_NAMESPACE_RETENTION:-7d}"

attempt=0
until temporal operator cluster health --address "$ADDRESS" >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 60 ]; then
    echo "Temporal at $ADDRESS is not healthy after 60 attempts" >&2
    exit 1
  fi
  sleep 2
done

if ! temporal operator namespace describe --address "$ADDRESS" -n "$NAMESPACE" >/dev/null 2>&1; then
  temporal operator namespace create --address "$ADDRESS" -n "$NAMESPACE" --retention "$RETENTION"
fi

# name:type pairs; keep in step with chorus/contracts/names.py (tests/system/test_deploy.py checks it).
existing="$(temporal operator search-attribute list --address "$ADDRESS" -n "$NAMESPACE")"
for pair in ChorusPattern:Keyword ChorusAgents:KeywordList ChorusStatus:Keyword \
            ChorusCostUsd:Double ChorusDraftStatus:Keyword ChorusAwaiting:KeywordList; do
  name="${pair%%:*}"
  type="${pair#*:}"
  if printf '%s\n' "$existing" | grep -qw "$name"; then
    echo "search attribute $name exists"
  else
    temporal operator search-attribute create --address "$ADDRESS" -n "$NAMESPACE" \
      --name "$name" --type "$type"
  fi
done
echo "namespace $NAMESPACE ready"
