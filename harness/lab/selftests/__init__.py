"""The kernel's own livepatch selftests, run in a lab guest of that kernel, one result per case.

``cases`` knows the scripts' shapes (which cases a script has, what its output and the
kernel log say about each), ``stage`` builds what goes into the guest, ``suite`` runs a
kernel line's scripts in one guest, ``results`` holds and reports the outcome.
"""
