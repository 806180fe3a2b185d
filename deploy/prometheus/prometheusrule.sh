#!/bin/sh
# Prints alerts.yml wrapped in a PrometheusRule (Prometheus Operator), for
#   deploy/prometheus/prometheusrule.sh [LABEL=VALUE...] | kubectl apply -n dgptq -f -
# Each LABEL=VALUE becomes a metadata label (e.g. release=kube-prometheus-stack, for an
# operator whose ruleSelector wants one).
set -eu
printf 'apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n'
printf '  name: dgptq\n  labels:\n    app.kubernetes.io/part-of: dgptq\n'
for kv in "$@"; do printf '    %s: "%s"\n' "${kv%%=*}" "${kv#*=}"; done
printf 'spec:\n'
sed -e '/^#/d' -e 's/^/  /' "$(dirname "$0")/alerts.yml"
