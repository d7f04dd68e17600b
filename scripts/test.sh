#!/usr/bin/env bash
# The whole capsim test suite on a fresh Debian machine:
#   1. installs the system packages the tests need (pcscd, the vpcd driver, opensc and
#      yubico-piv-tool, PostgreSQL, PgBouncer, SoftHSM2) when running as root and they are missing;
#   2. creates .venv and installs capsim with every extra and the test tools, and once, in
#      .cache/emvtool-venv, python-emv's emvtool (PyPI emv 1.0.14, which builds pyscard 2.0.0
#      with swig) for the interop tests: pytest runs without a network, so it is made here;
#   3. runs ruff, mypy --strict and pytest (PC/SC tests inside a private network and
#      mount namespace when running as root, so they never touch a host pcscd).
# Usage: scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

APT_PACKAGES=(strace pcscd libpcsclite-dev vsmartcard-vpcd pcsc-tools opensc yubico-piv-tool postgresql pgbouncer softhsm2 iproute2 util-linux gcc python3-dev swig)
need_apt=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "test.sh: not root, cannot install ${need_apt[*]}; the tests that need them will be skipped" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[pcsc,postgres,pkcs11,service,fuzz,analysis,test]"

# python-emv's emvtool, in a venv of its own (it pins pyscard 2.0.0), built once and reused.
# The stamp file marks a finished build; a half-built venv is removed and made again.
EMVTOOL_VENV="$ROOT/.cache/emvtool-venv"
EMVTOOL_PIN="emv==1.0.14"
if [ "$(cat "$EMVTOOL_VENV/.capsim-built" 2>/dev/null)" != "$EMVTOOL_PIN" ]; then
  rm -rf "$EMVTOOL_VENV"
  mkdir -p "$ROOT/.cache"
  if "$PY" -m venv "$EMVTOOL_VENV" \
    && "$EMVTOOL_VENV/bin/python" -m pip install -q "$EMVTOOL_PIN" >"$ROOT/.cache/emvtool-venv.log" 2>&1; then
    echo "$EMVTOOL_PIN" >"$EMVTOOL_VENV/.capsim-built"
  else
    echo "test.sh: could not prepare python-emv's emvtool (see .cache/emvtool-venv.log); its tests will be skipped" >&2
    rm -rf "$EMVTOOL_VENV"
  fi
fi
if [ -x "$EMVTOOL_VENV/bin/emvtool" ]; then
  export CAPSIM_EMVTOOL="$EMVTOOL_VENV/bin/emvtool"
  export CAPSIM_REQUIRE_EMVTOOL=1  # prepared: the interop tests must run, not skip
fi

echo "== ruff"
.venv/bin/ruff check capsim tests benchmarks vectors scripts
echo "== mypy --strict"
.venv/bin/mypy --strict capsim
echo "== pytest"
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -z "${CAPSIM_NO_UNSHARE:-}" ]; then
  # A private loopback and a private /run/pcscd: the test pcscd and its vpcd port are invisible
  # to the host, and a host pcscd cannot disturb the tests.
  mkdir -p /run/pcscd
  exec unshare --mount --net --fork bash -c '
    ip link set lo up
    mount -t tmpfs tmpfs /run/pcscd
    exec .venv/bin/python -m pytest "$@"' bash "$@"
else
  exec .venv/bin/python -m pytest "$@"
fi
