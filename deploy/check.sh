#!/usr/bin/env bash
# Checks the Prometheus files in deploy/prometheus: rule syntax, the scrape config and
# the rules' unit tests. Needs `promtool` (Debian/Ubuntu: apt-get install prometheus).
# Exits non-zero when any check fails.
set -euo pipefail
cd "$(dirname "$0")/prometheus"

if ! command -v promtool >/dev/null 2>&1; then
    echo "deploy/check.sh: promtool not found; install Prometheus (apt-get install prometheus)" >&2
    exit 127
fi

promtool check rules gnosync-rules.yml
promtool check config prometheus.yml
promtool test rules gnosync-rules.test.yml
