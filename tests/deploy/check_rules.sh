#!/usr/bin/env bash
# check_rules.sh REPO: the alert rules load and their unit tests pass. Exit 77 (CTest skip)
# without promtool.
set -euo pipefail
command -v promtool >/dev/null || { echo "SKIP: promtool not found (Debian package prometheus)"; exit 77; }
cd "$1/deploy/prometheus"
promtool check rules alerts.yml
promtool test rules alerts_test.yml
