#!/usr/bin/env bash
# Drains the gateway before it is stopped. Kubernetes runs it as the Envoy container's preStop hook
# (deploy/k8s/gateway.yaml) and compose as its pre_stop hook; the SIGTERM that follows, at which Envoy exits at
# once and cuts whatever is in flight, is sent only when it returns.
#
# It asks the admin endpoint to drain every listener gracefully (POST /drain_listeners?graceful). For the drain
# time (`--drain-time-s` in the image's CMD) Envoy goes on accepting connections, while load balancers take the
# pod out, and asks each client to leave (GOAWAY on HTTP/2, `Connection: close` on HTTP/1.1); then it closes its
# listeners. This waits until they are closed and no call is in flight on the API listener, or until its deadline,
# which must end before the pod's terminationGracePeriodSeconds do.
#
# Only bash: the envoyproxy/envoy image has no curl, wget or python, so the admin endpoint is reached through
# bash's /dev/tcp.
#
#   envoy-drain [ADMIN_ADDRESS [DEADLINE_SECONDS]]      defaults: 127.0.0.1:9901 40
set -uo pipefail
export LC_ALL=C  # read -N counts bytes

admin=${1:-127.0.0.1:9901}
deadline=$((SECONDS + ${2:-40}))
host=${admin%:*}
port=${admin##*:}
# The API listener's stats (stat_prefix "api" in hishamos_devstack/envoy.py) and the listeners Envoy stopped.
in_flight='http.api.downstream_rq_active'
stopped='listener_manager.listener_stopped'

# METHOD PATH: prints the response's body; fails unless Envoy answered 200.
admin_request() {
    local status line size chunk body='' chunked='' length=''
    exec 3<>"/dev/tcp/$host/$port" || return 1
    printf '%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n' "$1" "$2" "$admin" >&3
    IFS= read -r -t 5 status <&3 || { exec 3<&-; return 1; }
    while IFS= read -r -t 5 line <&3; do
        line=${line%$'\r'}
        [[ -z $line ]] && break
        line=${line,,}
        [[ $line == transfer-encoding:*chunked* ]] && chunked=1
        [[ $line == content-length:* ]] && length=${line#content-length:} && length=${length// /}
    done
    if [[ -n $chunked ]]; then
        while IFS= read -r -t 5 size <&3; do
            size=$((16#${size%$'\r'}))
            ((size == 0)) && break
            IFS= read -r -t 5 -N "$size" chunk <&3 || break
            body+=$chunk
            IFS= read -r -t 5 line <&3  # the chunk's closing CRLF
        done
    elif [[ -n $length && $length -gt 0 ]]; then
        IFS= read -r -t 5 -N "$length" body <&3
    fi
    exec 3<&-
    printf '%s\n' "$body"
    [[ $status == "HTTP/1.1 200 "* ]]
}

# NAME STATS: the value of one stat in /stats' text (`name: value` lines); empty when it is not there.
value() {
    [[ $2 =~ (^|$'\n')"$1: "([0-9]+) ]] && echo "${BASH_REMATCH[2]}"
}

if ! admin_request POST '/drain_listeners?graceful' >/dev/null; then
    echo "envoy-drain: the admin endpoint at $admin did not start the drain" >&2
    exit 1
fi
listeners_stopped='' calls=''
while ((SECONDS < deadline)); do
    stats=$(admin_request GET "/stats?filter=%5E%28$in_flight%7C$stopped%29%24") || stats=''  # ^(a|b)$
    listeners_stopped=$(value "$stopped" "$stats")
    calls=$(value "$in_flight" "$stats")
    if [[ -n $listeners_stopped && $listeners_stopped -gt 0 && $calls == 0 ]]; then
        exit 0
    fi
    sleep 0.5
done
echo "envoy-drain: deadline passed (listeners stopped: ${listeners_stopped:-?}, calls in flight: ${calls:-?})" >&2
exit 0
