#!/bin/sh
# livepatch-lab's stand-in for a vendor's agent, run through a scenario's command hook
# (scenarios/hook-insmod.yaml; put into the guest by images/hooks.yaml):
#   insmod-hook.sh load MODULE.ko    insmod it; the lab waits for the transition itself
#   insmod-hook.sh unload NAME       disable it, wait for the unpatching, rmmod it
# It prints what it does, as an agent would: the lab keeps that in apply.log.
set -eu
case "${1:-}" in
load)
    echo "insmod-hook: loading $2"
    insmod "$2"
    echo "insmod-hook: $2 loaded"
    ;;
unload)
    d=/sys/kernel/livepatch/$2
    echo "insmod-hook: disabling $2"
    echo 0 >"$d/enabled"
    start=$(date +%s)
    while t=; read -r t 2>/dev/null <"$d/transition"; [ "$t" = 1 ]; do
        if [ $(($(date +%s) - start)) -ge 120 ]; then
            echo "insmod-hook: $2 still unpatching after 120 s" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "insmod-hook: unpatched; unloading $2"
    rmmod "$2"
    ;;
*)
    echo "usage: $0 load MODULE.ko | unload NAME" >&2
    exit 2
    ;;
esac
