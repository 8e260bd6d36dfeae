# What the scripts that start a server of their own share; sourced, not run:
#   source "$(dirname "$0")/lib.sh"

server_pid=

# Unsets every MATCHWELL_* variable of the caller's environment, so that only what the script
# sets configures the servers and the commands it runs.
clear_matchwell_env() {
    local name
    for name in $(env | grep -o '^MATCHWELL_[A-Z_]*' || true); do
        unset "$name"
    done
}

# Starts "$@", a server that logs `listening on http://ADDRESS`, with its stderr in the file
# $1, and waits until /health/ready answers 200: matchwell listens before it has recovered,
# and answers 503 until then. Sets server_pid and address (HOST:PORT). Exits the script,
# showing the log, if the server dies or is not ready within 10 s.
serve_until_ready() {
    local log=$1
    shift
    # Made before the server starts, so that the first look for the address finds a file.
    : > "$log"
    "$@" 2> "$log" > /dev/null &
    server_pid=$!
    for _ in $(seq 1 500); do
        address=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n1 | cut -d/ -f3 || true)
        if [[ -n $address ]] && curl -sf "http://$address/health/ready" > /dev/null; then
            return
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        sleep 0.02
    done
    echo "the server did not become ready; its log:" >&2
    cat "$log" >&2
    exit 1
}

# Stops the server serve_until_ready started, if it runs.
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
