"""From what a run saw and what it was to show, the verdict: pure functions."""
