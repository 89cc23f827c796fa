"""Input drift: live bin counts of served rows against the training reference."""
