#!/bin/sh
# Prints the console script and health port of a Clarion service as shell
# assignments; used at image build time. Exits 1 for an unknown service.
set -eu
case "${1:-}" in
  ingest-api)       script=clarion-ingest-api;   port=8000 ;;
  aggregator)       script=clarion-aggregator;   port=8003 ;;
  realtime-gateway) script=clarion-gateway;      port=8011 ;;
  push-worker)      script=clarion-push-worker;  port=8004 ;;
  email-worker)     script=clarion-email-worker; port=8005 ;;
  analytics)        script=clarion-analytics;    port=8002 ;;
  *)
    echo "unknown SERVICE '${1:-}': expected ingest-api, aggregator, realtime-gateway," \
         "push-worker, email-worker or analytics" >&2
    exit 1 ;;
esac
printf 'CLARION_SERVICE_SCRIPT=%s\nCLARION_HEALTH_PORT=%s\n' "$script" "$port"
