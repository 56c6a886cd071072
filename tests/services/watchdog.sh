# Sourced by the service starters (kafka.sh, opensearch.sh) just before they exec the service:
#   start_watchdog WATCH_PID [DIR]
# runs a small background loop that stops this process (SIGTERM, then SIGKILL after 10 s) once
# WATCH_PID is gone, then removes DIR if given (the service's data, which nobody will restart),
# and ends by itself when this process ends. After the exec, "this process"
# is the service, so a test binary that never stops its service (Rust does not drop statics)
# leaves nothing behind. A process start time (field 22 of /proc/PID/stat) tells a live process
# from a later one that reused its PID; a zombie counts as gone.

started() {
  local s
  s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  # shellcheck disable=SC2086
  set -- ${s##*) }
  [ "$1" != Z ] || return 1
  echo "${20}"
}

start_watchdog() {
  local self=$$ watch="$1" dir="${2:-}" self_start watch_start
  self_start="$(started $self)"
  watch_start="$(started "$watch" || echo gone)"
  (
    trap '' TERM INT HUP
    alive() { [ "$(started "$1" 2>/dev/null || echo gone)" = "$2" ]; }
    while alive $self "$self_start"; do
      if ! alive "$watch" "$watch_start"; then
        kill -TERM $self 2>/dev/null
        for _ in $(seq 20); do alive $self "$self_start" || break; sleep 0.5; done
        alive $self "$self_start" && kill -KILL $self 2>/dev/null && sleep 0.5
        [ -z "$dir" ] || rm -rf "$dir"
        exit 0
      fi
      sleep 1
    done
  ) </dev/null >/dev/null 2>&1 &
}
