#!/bin/bash
# A script of the lab's, in the style of the kernel's livepatch selftests and run beside
# their functions.sh: one expectation that holds, and one that is wrong on purpose. The
# lab must pass the first and fail the second with the kernel log's diff in its report.
# (The kernel's own scripts are never edited; this file is the lab's.)

. $(dirname $0)/functions.sh

MOD_LIVEPATCH=test_klp_livepatch

setup_config

start_test "an expectation that holds"

log "livepatch: a line the lab wrote"

check_result "livepatch: a line the lab wrote"

start_test "a deliberately broken expectation"

load_lp $MOD_LIVEPATCH
disable_lp $MOD_LIVEPATCH
unload_lp $MOD_LIVEPATCH

check_result "livepatch: enabling patch 'a patch that was never loaded'"

exit 0
