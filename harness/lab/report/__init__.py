"""Results presented: the outcome and its artifacts, the table and explanations, the
sign-off page."""
