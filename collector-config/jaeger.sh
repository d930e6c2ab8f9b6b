#!/usr/bin/env bash
# Jaeger v2 without Docker, built from source with Go (1.24 or newer).
#
#   collector-config/jaeger.sh build   build once (cached), print the binary's path
#   collector-config/jaeger.sh start   build if needed, start in the background, wait until
#                                      it answers, print the UI address and how to stop it
#   collector-config/jaeger.sh stop    stop the Jaeger that `start` started (by its pid)
#   collector-config/jaeger.sh run     build if needed, run in the foreground (Ctrl-C stops)
#
# It runs collector-config/jaeger.yaml: OTLP on 127.0.0.1:4317 (gRPC) and :4318
# (HTTP), UI and query API on http://127.0.0.1:16686, traces in memory. Other
# ports: JAEGER_OTLP_GRPC_PORT, JAEGER_OTLP_HTTP_PORT, JAEGER_UI_PORT,
# JAEGER_QUERY_GRPC_PORT (see jaeger.yaml).
#
# The binary is kept in $SPANJOURNAL_JAEGER_CACHE (default
# ~/.cache/spanjournal-jaeger), outside the repository, so a fresh clone on the
# same machine reuses it. The test suite builds through this script too.
set -euo pipefail

# v1.75.0 of the Go module is the Jaeger v2.12.0 release (Jaeger tags every
# release twice; the compose file's image is jaegertracing/jaeger:2.12.0).
JAEGER_MODULE=github.com/jaegertracing/jaeger
JAEGER_MODULE_VERSION=v1.75.0
JAEGER_RELEASE=v2.12.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SPANJOURNAL_JAEGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spanjournal-jaeger}"
binary="$cache/jaeger-$JAEGER_MODULE_VERSION"
pid_file="$cache/jaeger.pid"
log_file="$cache/jaeger.log"
ui_port="${JAEGER_UI_PORT:-16686}"
export JAEGER_UI_ASSETS="${JAEGER_UI_ASSETS:-$here/jaeger-ui}"

# Go's official installer puts it here, not always on PATH.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
    PATH="$PATH:/usr/local/go/bin"
fi

build() {
    if [[ -x "$binary" ]]; then
        echo "$binary"
        return
    fi
    if ! command -v go >/dev/null; then
        echo "jaeger.sh: the Go toolchain (go) is not on PATH; install Go 1.24+ to build Jaeger" >&2
        exit 3
    fi
    mkdir -p "$cache"
    echo "jaeger.sh: building Jaeger $JAEGER_RELEASE ($JAEGER_MODULE@$JAEGER_MODULE_VERSION) into $binary" >&2
    # `go install module/cmd/jaeger@version` refuses this module (its go.mod has a
    # replace directive), so build it as the main module from the module cache,
    # with exactly the dependency versions its go.sum pins.
    go mod download "$JAEGER_MODULE@$JAEGER_MODULE_VERSION"
    local source
    source="$(go env GOMODCACHE)/$JAEGER_MODULE@$JAEGER_MODULE_VERSION"
    GOFLAGS=-buildvcs=false go build -C "$source" \
        -ldflags "-X $JAEGER_MODULE/internal/version.latestVersion=$JAEGER_RELEASE" \
        -o "$binary.partial" ./cmd/jaeger
    mv "$binary.partial" "$binary"
    echo "$binary"
}

running_pid() {
    local pid
    pid="$(cat "$pid_file" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
    local pid
    if pid="$(running_pid)"; then
        echo "Jaeger is already running (pid $pid): http://127.0.0.1:$ui_port"
        return
    fi
    build >/dev/null
    "$binary" --config "$here/jaeger.yaml" >"$log_file" 2>&1 &
    pid=$!
    echo "$pid" >"$pid_file"
    for _ in $(seq 300); do
        if curl --silent --fail --noproxy '*' "http://127.0.0.1:$ui_port/api/services" >/dev/null; then
            echo "Jaeger $JAEGER_RELEASE is up (pid $pid): UI http://127.0.0.1:$ui_port"
            echo "  OTLP: OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:${JAEGER_OTLP_GRPC_PORT:-4317}"
            echo "  log: $log_file    stop: $0 stop"
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pid_file"
            echo "jaeger.sh: Jaeger exited at start; its log ($log_file):" >&2
            tail -n 20 "$log_file" >&2
            exit 1
        fi
        sleep 0.1
    done
    kill "$pid"
    rm -f "$pid_file"
    echo "jaeger.sh: Jaeger did not answer on port $ui_port within 30 s; see $log_file" >&2
    exit 1
}

stop() {
    local pid
    if pid="$(running_pid)"; then
        kill "$pid"
        rm -f "$pid_file"
        echo "stopped Jaeger (pid $pid)"
    else
        rm -f "$pid_file"
        echo "no Jaeger started by $0 is running"
    fi
}

case "${1:-}" in
    build) build ;;
    start) start ;;
    stop) stop ;;
    run)
        build >/dev/null
        echo "Jaeger $JAEGER_RELEASE: UI http://127.0.0.1:$ui_port (Ctrl-C stops)"
        exec "$binary" --config "$here/jaeger.yaml"
        ;;
    *)
        echo "usage: $0 build|start|stop|run" >&2
        exit 2
        ;;
esac
