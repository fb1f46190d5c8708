"""A run as it happens: the plan's steps in a guest, the livepatch operations, the
workload, and the record of what was seen."""
