#!/usr/bin/env bash
# check_k8s.sh REPO: renders the Kustomize base and the example overlay offline and validates
# them (check_k8s.js). Exit 77 (CTest skip) without kubectl, node or the npm packages.
set -euo pipefail
repo=$1 here=$(cd "$(dirname "$0")" && pwd)
for tool in kubectl node; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not found"; exit 77; }
done
[[ -d "$here/node_modules/kubernetes-models" ]] || {
  echo "SKIP: npm packages missing: npm ci --prefix tests/deploy (scripts/setup.sh does it)"
  exit 77
}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
kubectl kustomize "$repo/deploy/k8s/base" > "$out/base.yaml"
kubectl kustomize "$repo/deploy/k8s/overlays/example" > "$out/overlay-example.yaml"
node "$here/check_k8s.js" "$repo" "$out/base.yaml" "$out/overlay-example.yaml"
