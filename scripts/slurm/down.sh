#!/usr/bin/env bash
# Stop the test cluster's jobs and daemons (by the pid files `up.sh` wrote).
set -euo pipefail
exec python3 "$(dirname "$0")/cluster.py" down "$@"
