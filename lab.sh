#!/usr/bin/env bash
# livepatch-lab's set-up-and-run entry point for a fresh Debian or Ubuntu machine.
#
#   ./lab.sh main [KERNEL]   install what is missing, then validate the lab's good livepatch
#                            (scenarios/good.yaml) under load on KERNEL (default debian-6.1,
#                            fetched from Debian's archive) with the default image (built
#                            here): boot, apply mid-run, check, revert, print the verdict
#   ./lab.sh test [ARGS]     install what is missing, then run the test suite (pytest ARGS)
#   ./lab.sh install         only install
#
# Idempotent: installed packages and an up-to-date .venv are left alone.
# Run as root or as a user with sudo.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

say() { printf '[lab.sh] %s\n' "$*" >&2; }

# Only what it takes to install the lab itself: the host's own needs are the lab's to say
# (`livepatch-lab setup`: harness/supply/hostsetup.py, the same list a wheel's user runs).
install_bootstrap() {
  local missing=() p
  for p in python3 python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# install_lab MODE: MODE run (what a run needs) or test (the suite's needs too: libvirt, browser,
# linters). The venv is refreshed when pyproject.toml, setup.py or the mode change.
install_lab() {
  local mode=$1 stamp=.venv/.installed-$1 want extras=""
  [ "$mode" = test ] && extras="[test]"
  want=$( (cat pyproject.toml setup.py; echo "mode: $mode") | sha256sum | cut -d' ' -f1)
  install_bootstrap
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
  fi
  local fresh=0
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] || fresh=1
  if [ "$fresh" = 1 ]; then
    say "installing livepatch-lab$extras and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".$extras" >/dev/null
  fi
  if [ "$mode" = test ]; then
    .venv/bin/livepatch-lab setup --test
    # libvirt-python builds against libvirt-dev, which setup has just installed
    [ "$fresh" = 1 ] && .venv/bin/python -m pip install -q -e '.[libvirt,test]' >/dev/null
  else
    .venv/bin/livepatch-lab setup
  fi
  echo "$want" > "$stamp"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  install)
    install_lab test ;;
  main)
    install_lab run
    exec .venv/bin/livepatch-lab run scenarios/good.yaml --kernel "${1:-debian-6.1}" ;;
  test)
    install_lab test
    set +e
    .venv/bin/python -m pytest "$@"
    rc=$?
    set -e
    if [ "$rc" = 5 ]; then say "pytest collected no tests: that is a failure"; exit 1; fi
    exit "$rc" ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
