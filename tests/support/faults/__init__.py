"""Fault-injection helpers for the engine's evidence tests (tests/evidence/test_faults.py and friends).

- ``aws_faults``: throttling and 5xx answers injected through botocore's own retry path.
- ``chaos``: at-least-once, late, duplicated and reordered S3 notifications; lost dispatches;
  dropped result uploads; orchestrator crashes at its checkpoints.
- ``invariants``: the properties every scenario must keep, checked in one place.
"""
