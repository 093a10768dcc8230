# Shared set-up for scripts/run.sh and scripts/test.sh: installs what is missing,
# and nothing twice.
set -euo pipefail

# Debian packages the build needs (scripts/run.sh) ...
KORDON_DEB_PACKAGES="${KORDON_DEB_PACKAGES:-gcc libc6-dev pkg-config}"
# ... and the real peers the tests talk to (scripts/test.sh only): kamailio
# (with its rtpengine module), sip-tester (SIPp) and rtpengine-daemon for the ng
# end-to-end tests (tests/ng_kamailio.rs, tests/ng_vs_rtpengine.rs), and
# baresip-core, a SIP user agent for the SIP end-to-end tests (tests/sip/),
# and freeradius-utils (radclient) for the verification node's RADIUS tests.
KORDON_TEST_DEB_PACKAGES="${KORDON_TEST_DEB_PACKAGES:-iproute2 curl kamailio sip-tester rtpengine-daemon baresip-core freeradius-utils}"

# The peers' packages may start system services (kamailio, rtpengine): the
# tests start their own instances on their own ports, so those are stopped.
stop_packaged_services() {
    command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] || return 0
    for unit in kamailio rtpengine-daemon; do
        if systemctl is-active --quiet "$unit" 2>/dev/null || systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            echo "stopping and disabling the packaged $unit service (tests run their own)"
            systemctl disable --now "$unit" >/dev/null 2>&1 || true
        fi
    done
}

ensure_debs() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            ensure_debs cargo rustc
        fi
    fi
}

ensure_cargo_tool() {
    # ensure_cargo_tool BINARY CRATE
    command -v "$1" >/dev/null 2>&1 || cargo install --locked "$2"
}
