"""Judging a livepatch: scenarios, the runner and its steps, livepatch operations,
workloads, forensics, the verdict and its reports."""
