#!/usr/bin/env bash
# Runs one tenant's `truffles-bot serve` on this machine from exactly what the
# operator rendered for its Deployment: the runtime ConfigMap (client.json and
# TRUFFLES_* variables), the runtime Secret, and the Secret keys the spec refers
# to. There is no kubelet in the local environment, so this plays the pod.
#
#   make run                                   # terminal 1 (prints KUBECONFIG, PATH)
#   scripts/run-runtime.sh flower-shop demo    # terminal 2, with those variables
#
# TRUFFLES_LISTEN (default 127.0.0.1:8080) sets the address; the webhook URL is
# printed. Needs kubectl on PATH and KUBECONFIG.
set -euo pipefail
name="${1:?usage: run-runtime.sh NAME [NAMESPACE]}"
ns="${2:-default}"
cd "$(dirname "$0")/.."

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
kubectl -n "$ns" get configmap "$name-runtime" -o json >"$dir/cm.json"
kubectl -n "$ns" get secret "$name-runtime" -o json >"$dir/secret.json"
kubectl -n "$ns" get deployment "$name-bot" -o json >"$dir/deploy.json"
kubectl -n "$ns" get secret "$name-webhook" -o json >"$dir/webhook.json"

# One NAME=value line per variable the container would get; secret values stay
# in the temporary directory and this process's environment.
python3 - "$dir" "$ns" >"$dir/env" <<'PYEOF'
import base64, json, subprocess, sys
d, ns = sys.argv[1], sys.argv[2]
load = lambda f: json.load(open(f"{d}/{f}"))
cm, secret, deploy = load("cm.json"), load("secret.json"), load("deploy.json")
env = {k: v for k, v in cm["data"].items() if k.upper() == k}
env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
container = deploy["spec"]["template"]["spec"]["containers"][0]
for var in container.get("env", []):
    ref = var.get("valueFrom", {}).get("secretKeyRef")
    if ref:
        out = subprocess.run(["kubectl", "-n", ns, "get", "secret", ref["name"], "-o", "json"],
                             check=True, capture_output=True, text=True).stdout
        env[var["name"]] = base64.b64decode(json.loads(out)["data"][ref["key"]]).decode()
open(f"{d}/client.json", "w").write(cm["data"]["client.json"])
env["TRUFFLES_CONFIG_FILE"] = f"{d}/client.json"
for k, v in env.items():
    print(f"{k}={v}")
PYEOF

while IFS='=' read -r key value; do export "$key=$value"; done <"$dir/env"
export TRUFFLES_LISTEN="${TRUFFLES_LISTEN:-127.0.0.1:8080}"
path="$(python3 -c 'import base64,json,sys,urllib.parse; u=base64.b64decode(json.load(open(sys.argv[1]))["data"]["url"]).decode(); print(urllib.parse.urlparse(u).path)' "$dir/webhook.json")"
echo "[run-runtime] $name: POST ChatFlow webhooks to http://$TRUFFLES_LISTEN$path" >&2
cargo run -q -p truffles-bot -- serve
