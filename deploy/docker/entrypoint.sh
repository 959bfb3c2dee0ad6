#!/bin/sh
# Starts the service this image was built for (its console script, chosen by the
# SERVICE build argument). Arguments, when given, replace the command instead,
# e.g. `docker run clarion/aggregator python -c ...`.
set -eu
if [ "$#" -gt 0 ]; then
  exec "$@"
fi
# shellcheck disable=SC1091
. /opt/venv/clarion-service.env
exec "/opt/venv/bin/${CLARION_SERVICE_SCRIPT}"
