#!/usr/bin/env bash
# Builds the CRDs of the optional integrations, pinned, from their Go modules, and caches them
# per user: the Prometheus Operator's PrometheusRule and ServiceMonitor (generated with this
# repository's controller-gen from the monitoring API types), cert-manager's Certificate, Issuer
# and ClusterIssuer (from the cert-manager module), and the Gateway API's GatewayClass, Gateway,
# HTTPRoute and BackendTLSPolicy (from the gateway-api module's standard channel, which serves
# all four as v1), External Secrets Operator's ExternalSecret (from the external-secrets module,
# about 19 MB to download once: its apis module is not published apart) and Flux's Kustomization
# (from the kustomize-controller module). Tests install them into the test API server to check
# config/prometheus, config/cert-manager, config/public-door, the chart's optional objects and the
# manifests of docs/gitops.md against the real schemas.
#
# Prints the directory of the CRD files on stdout; everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

MONITORING_VERSION="${MONITORING_VERSION:-v0.95.2}"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.19.1}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
EXTERNAL_SECRETS_VERSION="${EXTERNAL_SECRETS_VERSION:-v1.3.2}"
# v1.9.6: the newest whose go.mod asks for no newer Go than this repository's.
FLUX_KUSTOMIZE_VERSION="${FLUX_KUSTOMIZE_VERSION:-v1.9.6}"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/m2m-operator/crds"
dest="$cache_root/monitoring-$MONITORING_VERSION-cert-manager-$CERT_MANAGER_VERSION-gateway-api-$GATEWAY_API_VERSION-eso-$EXTERNAL_SECRETS_VERSION-flux-$FLUX_KUSTOMIZE_VERSION"

complete() {
  [ -f "$dest/monitoring.coreos.com_prometheusrules.yaml" ] && [ -f "$dest/cert-manager.io_certificates.yaml" ] &&
    [ -f "$dest/gateway.networking.k8s.io_backendtlspolicies.yaml" ] &&
    [ -f "$dest/external-secrets.io_externalsecrets.yaml" ] && [ -f "$dest/kustomize.toolkit.fluxcd.io_kustomizations.yaml" ]
}

# shellcheck source=hack/cache.sh
. hack/cache.sh
cache_enter "$cache_root" complete "$dest"
echo "building the optional CRDs into $dest" >&2
go build -o "$work/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen
mkdir -p "$work/mod" "$work/out"
monitoring=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
(
  cd "$work/mod"
  printf 'module crdgen\n\ngo 1.26\n' > go.mod
  printf 'package crdgen\n\nimport _ "%s/v1"\n' "$monitoring" > tools.go
  GOFLAGS= go get "$monitoring@$MONITORING_VERSION" >&2
  GOFLAGS= go mod tidy >&2
  "$work/controller-gen" crd:allowDangerousTypes=true paths="$monitoring/v1" output:crd:dir="$work/gen" >&2
)
cp "$work/gen/monitoring.coreos.com_prometheusrules.yaml" "$work/gen/monitoring.coreos.com_servicemonitors.yaml" "$work/out/"
cm="$(GOFLAGS= go mod download -json "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
for crd in certificates issuers clusterissuers; do
  cp "$cm/deploy/crds/cert-manager.io_$crd.yaml" "$work/out/"
done
# The standard channel only: the experimental one's CRDs cannot later be replaced by standard ones
# (the Gateway API's safe-upgrades policy), and the chart renders no experimental kind.
gw="$(GOFLAGS= go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [ ! -d "$gw/config/crd/standard" ]; then
  echo "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION has no config/crd/standard in its module" >&2
  exit 1
fi
for crd in gatewayclasses gateways httproutes backendtlspolicies; do
  cp "$gw/config/crd/standard/gateway.networking.k8s.io_$crd.yaml" "$work/out/"
done
# The ExternalSecret alone: its v1 schema is what the manifests are checked against, and the
# stores (SecretStore, ClusterSecretStore) are the user's.
eso="$(GOFLAGS= go mod download -json "github.com/external-secrets/external-secrets@$EXTERNAL_SECRETS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
cp "$eso/config/crds/bases/external-secrets.io_externalsecrets.yaml" "$work/out/"
flux="$(GOFLAGS= go mod download -json "github.com/fluxcd/kustomize-controller@$FLUX_KUSTOMIZE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
cp "$flux/config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml" "$work/out/"
chmod -R u+w "$work/out"
rm -rf "$dest"
mv "$work/out" "$dest"
echo "$dest"
