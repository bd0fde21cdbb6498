#!/usr/bin/env bash
# Validates everything under deploy/: Kubernetes manifests (rendered with kustomize, checked
# against the Kubernetes 1.25 and 1.37 schemas and the prometheus-operator CRD schemas), the
# committed renders being current, the configs (with `nodewall check`), the systemd unit
# (systemd-analyze verify), the alert rules (promtool check/test rules), the Grafana dashboard,
# the Dockerfile's build and runtime stages, and docs/deploy.md.
#
#   bash deploy/check.sh            run the checks (pytest; extra arguments go to pytest)
#   bash deploy/check.sh --update   regenerate deploy/kubernetes/rendered/ and the PrometheusRule
#
# Needs python3 (venv), promtool (Debian package prometheus), systemd-analyze, binutils, cargo.
# The Python tools are pinned in deploy/check/requirements.txt and installed once into
# target/deploy-venv; re-runs skip the install. Changes nothing outside target/ (and the
# generated files with --update); needs no network once the venv exists.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/target/deploy-venv"
req="$repo/deploy/check/requirements.txt"
stamp="$venv/.requirements.sha256"

want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -x $venv/bin/python || $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
  echo "deploy/check: installing pinned tools into $venv"
  python3 -m venv "$venv" || {
    echo "deploy/check: python3 -m venv failed; on Debian: apt-get install -y python3-venv" >&2
    exit 1
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi

cd "$repo/deploy/check"
if [[ ${1:-} == --update ]]; then
  exec "$venv/bin/python" update.py
fi
# No third-party pytest plugins (cloudcoil ships one that needs a live cluster).
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
