#!/usr/bin/env bash
# Start the single-node test cluster (idempotent); prints the SLURM_CONF line to eval:
#   eval "$(scripts/slurm/up.sh)"
set -euo pipefail
exec python3 "$(dirname "$0")/cluster.py" up "$@"
