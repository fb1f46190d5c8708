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

APT_PACKAGES=(
  qemu-system-x86 qemu-utils        # the guests and their overlays
  mmdebstrap debian-archive-keyring # the guest image; verified kernel downloads
  e2fsprogs cpio busybox-static kmod dpkg file  # image filesystems, initramfs, depmod
  gcc make libelf-dev               # livepatch modules are built against each kernel's headers
  libc6-dev                         # static libc: the guest's httpd, the selftests' getpid helper
  python3 python3-venv openssh-client
  stress-ng                         # the unit tests run the guest-side stress script on the host
  libvirt-daemon-system libvirt-clients  # the libvirt backend (LIVEPATCH_LAB_BACKEND=libvirt)
  libvirt-dev pkg-config            # so pip builds libvirt-python for .venv
  openssh-server                    # the libvirt tests' remote-style host: an sshd on 127.0.0.1
  shellcheck                        # actionlint (test suite) checks the workflows' shell with it
  chromium fonts-dejavu-core        # the test suite opens the sign-off report as a reader would
)
TCG_WRAPPER=/usr/local/libexec/livepatch-lab/qemu-tcg-single  # Settings.libvirt_tcg_emulator

say() { printf '[lab.sh] %s\n' "$*" >&2; }

install_system() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# QEMU from 9.1 runs TCG guests multi-threaded without the stale-code race of older ones
# (harness/machine/backends/qemu/command.py: MTTCG_SAFE_SINCE); with a host thread per vCPU a
# debian-6.12 livepatch transition takes a second or two, not minutes. Debian 12 ships 7.2 and its
# backports 10.x, but bookworm's libvirt (9.0) failed to probe that one, so it is not installed
# over the system's QEMU: it is unpacked beside it for the lab's QEMU backend, which runs it
# through $QEMU_MTTCG (Settings.qemu_binary's default where that exists).
QEMU_MTTCG=/usr/local/libexec/livepatch-lab/qemu-system-x86_64
QEMU_MTTCG_ROOT=/usr/local/lib/livepatch-lab/qemu
install_qemu_mttcg() {
  local have mirror tmp apt deb
  have=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null | sed 's/^[0-9]*://')
  if [ -n "$have" ] && dpkg --compare-versions "$have" ge 9.1; then return 0; fi
  if [ -x "$QEMU_MTTCG" ] && "$QEMU_MTTCG" --version >/dev/null 2>&1; then return 0; fi
  # shellcheck disable=SC1091
  if ! (. /etc/os-release && [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]); then
    say "qemu-system-x86 ${have:-?} is older than 9.1: TCG guests run single-threaded (slow livepatch transitions on 6.12)"
    return 0
  fi
  # shellcheck disable=SC2016  # apt's own $(FIELD) placeholders
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | awk '$2 == "bookworm" {print $1; exit}')
  if [ -z "$mirror" ]; then
    say "no bookworm mirror in the apt sources: TCG guests run single-threaded"
    return 0
  fi
  say "unpacking QEMU from bookworm-backports ($mirror) into $QEMU_MTTCG_ROOT (multi-threaded TCG)"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main" > "$tmp/sources.list"
  apt=(apt-get -qq -o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o Acquire::Languages=none -o APT::Sandbox::User=root)
  if ! { "${apt[@]}" update && (cd "$tmp" && "${apt[@]}" download qemu-system-x86 qemu-system-common \
         qemu-system-data seabios); }; then
    say "could not fetch QEMU from bookworm-backports: TCG guests run single-threaded"
    rm -rf "$tmp"
    return 0
  fi
  $SUDO rm -rf "$QEMU_MTTCG_ROOT"
  $SUDO mkdir -p "$QEMU_MTTCG_ROOT" "$(dirname "$QEMU_MTTCG")"
  for deb in "$tmp"/*.deb; do $SUDO dpkg -x "$deb" "$QEMU_MTTCG_ROOT"; done
  rm -rf "$tmp"
  printf '%s\n' '#!/bin/sh' \
    "# livepatch-lab: QEMU from bookworm-backports, unpacked in $QEMU_MTTCG_ROOT (see lab.sh)" \
    "export QEMU_MODULE_DIR=$QEMU_MTTCG_ROOT/usr/lib/x86_64-linux-gnu/qemu" \
    "exec $QEMU_MTTCG_ROOT/usr/bin/qemu-system-x86_64 -L $QEMU_MTTCG_ROOT/usr/share/qemu -L $QEMU_MTTCG_ROOT/usr/share/seabios \"\$@\"" \
    | $SUDO tee "$QEMU_MTTCG" >/dev/null
  $SUDO chmod 755 "$QEMU_MTTCG"
  "$QEMU_MTTCG" --version | head -n 1 >&2
}

# The libvirt backend's single-threaded TCG wrapper (see harness/machine/backends/libvirt/machine.py), and
# /dev/kvm as Debian's udev rule leaves it (root:kvm 0660): a root-only /dev/kvm makes
# libvirt re-probe QEMU on every call (its probe sees KVM, its QEMU user cannot), ~1 min per start.
install_libvirt_host() {
  if ! cmp -s harness/machine/backends/qemu-tcg-single "$TCG_WRAPPER"; then
    say "installing $TCG_WRAPPER"
    $SUDO install -D -m 755 harness/machine/backends/qemu-tcg-single "$TCG_WRAPPER"
  fi
  if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G:%a /dev/kvm)" != kvm:660 ]; then
    say "/dev/kvm: group kvm, mode 0660 (as udev sets it)"
    $SUDO chgrp kvm /dev/kvm && $SUDO chmod 0660 /dev/kvm
  fi
}

install_python() {
  local stamp=.venv/.installed want
  want=$( (cat pyproject.toml; echo "extras: libvirt,test") | sha256sum | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing livepatch-lab and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[libvirt,test]' >/dev/null
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  install)
    install_system; install_qemu_mttcg; install_libvirt_host; install_python ;;
  main)
    install_system; install_qemu_mttcg; install_libvirt_host; install_python
    exec .venv/bin/livepatch-lab run scenarios/good.yaml --kernel "${1:-debian-6.1}" ;;
  test)
    install_system; install_qemu_mttcg; install_libvirt_host; install_python
    set +e
    .venv/bin/python -m pytest "$@"
    rc=$?
    set -e
    if [ "$rc" = 5 ]; then say "pytest collected no tests: that is a failure"; exit 1; fi
    exit "$rc" ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
