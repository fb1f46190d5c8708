"""The bottom layer: errors, settings and every deadline, file locks, atomic writes,
host commands, the retry policies, YAML validation. Imports nothing else of the lab."""
