#!/usr/bin/env bash
# Install the Debian/Ubuntu packages that building and testing dao needs, only where missing.
# Usage: scripts/system-deps.sh build|test
set -euo pipefail
want=()
need() { # need COMMAND-OR-CHECK PACKAGE...
    if ! eval "$1" >/dev/null 2>&1; then shift; want+=("$@"); fi
}
PY=${PYTHON:-python3}
need "command -v gcc" gcc
need "command -v make" make
need "$PY -m venv --help" python3-venv
need "test -f \"\$($PY -c 'import sysconfig; print(sysconfig.get_paths()[\"include\"])')/Python.h\"" python3-dev
if [ "${1:-build}" = test ]; then
    # the widget tests drive JupyterLab in headless Chromium (dao.widgets.testing): Debian's
    # browser and driver, never a download
    need "command -v chromium" chromium
    need "command -v chromedriver" chromium-driver
    # the network tests start their own Redis on a loopback port (dao.testing.redis_server);
    # Debian's package starts no daemon
    need "command -v redis-server" redis-server
    # TLS registries: the tests make a throw-away CA and certificates with openssl
    need "command -v openssl" openssl
    # as root, each test machine runs in a network namespace of its own (ip netns, veth)
    need "command -v ip" iproute2
fi
[ ${#want[@]} -eq 0 ] && exit 0
echo "installing system packages: ${want[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${want[@]}"
