#!/usr/bin/env bash
# End to end on kind, for users' CI (needs docker, kind, kubectl, helm, curl, python3):
#   create a cluster → build and load the operator and runtime images → install ingress-nginx and
#   the chart → apply a tenant → wait for Ready → drive one conversation through the simulator
#   over the tenant's ingress with tests/e2e/drive.sh (the same script the test suite runs
#   against a locally started runtime).
#
#   tests/e2e/kind.sh            # run it (KEEP_CLUSTER=1 keeps the cluster afterwards)
#   tests/e2e/kind.sh diagnose   # print what a failed run left behind
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER="${CLUSTER:-contact-e2e}"
INGRESS_NGINX_VERSION="${INGRESS_NGINX_VERSION:-controller-v1.12.1}"
log() { printf '\n=== %s\n' "$*"; }

if [[ "${1:-}" == diagnose ]]; then
  kubectl get contacttenants -A -o wide || true
  kubectl describe contacttenant -n tenant-e2e e2e || true
  kubectl get all,ingress,pvc,networkpolicy -n tenant-e2e || true
  kubectl get events -A --sort-by=.lastTimestamp | tail -50 || true
  kubectl logs -n contact-system deploy/contact-contact-operator --tail=200 || true
  kubectl logs -n tenant-e2e statefulset/e2e --tail=200 || true
  kubectl logs -n tenant-e2e deploy/contact-simulator --tail=100 || true
  exit 0
fi

for tool in docker kind kubectl helm curl python3; do
  command -v "$tool" >/dev/null || { echo "kind.sh needs $tool" >&2; exit 1; }
done

log "cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config tests/e2e/kind-config.yaml --wait 120s
[[ -n "${KEEP_CLUSTER:-}" ]] || trap 'kind delete cluster --name "$CLUSTER"' EXIT

log "images"
docker build -f operator/Dockerfile -t contact-operator:e2e .
docker build -f tenant-runtime/Dockerfile -t contact-runtime:e2e .
kind load docker-image --name "$CLUSTER" contact-operator:e2e contact-runtime:e2e

log "ingress-nginx $INGRESS_NGINX_VERSION"
kubectl apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/$INGRESS_NGINX_VERSION/deploy/static/provider/kind/deploy.yaml"
kubectl wait -n ingress-nginx --for=condition=Ready pod -l app.kubernetes.io/component=controller --timeout=180s

log "the operator chart"
helm upgrade --install contact charts/contact-operator --namespace contact-system --create-namespace --wait \
  --set image.repository=contact-operator --set image.tag=e2e --set image.pullPolicy=Never \
  --set runtimeImage.repository=contact-runtime --set runtimeImage.tag=e2e

log "a tenant"
kubectl create namespace tenant-e2e --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n tenant-e2e -f tests/e2e/tenant.yaml
kubectl wait -n tenant-e2e configmap/e2e-config --for=create --timeout=120s
kubectl apply -n tenant-e2e -f tests/e2e/simulator.yaml
kubectl wait -n tenant-e2e contacttenant/e2e --for=condition=Ready --timeout=300s
kubectl rollout status -n tenant-e2e deploy/contact-simulator --timeout=120s
kubectl get contacttenants -n tenant-e2e

log "drive a conversation over the tenant's ingress"
kubectl port-forward -n tenant-e2e svc/contact-simulator 19090:9090 >/dev/null &
pf=$!
trap 'kill $pf 2>/dev/null || true; [[ -n "${KEEP_CLUSTER:-}" ]] || kind delete cluster --name "$CLUSTER"' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:19090/_sim/healthz >/dev/null && break; sleep 0.2; done
password="$(kubectl get secret -n tenant-e2e e2e-keys -o jsonpath='{.data.admin-password}' | base64 -d)"
tests/e2e/drive.sh http://127.0.0.1:8080 http://127.0.0.1:19090 admin@contact.local "$password" e2e.contact.test
log "ok"
