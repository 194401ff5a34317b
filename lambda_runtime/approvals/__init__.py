"""Reviewers' decisions on orders waiting for their environment (``awaiting_approval``)."""
