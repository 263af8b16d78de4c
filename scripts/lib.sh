# Shell functions the scripts share (sourced, not run).

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# need_tools WHO TOOL:PACKAGE… installs, from Debian's archive, the package
# of every tool that is not on PATH (idempotent: nothing when all are there).
need_tools() {
    local who=$1 pair
    shift
    local missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "$who: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
