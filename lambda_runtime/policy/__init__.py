"""The deployment policy: which repositories, authors and events may run, and what each
environment grants. Owned by whoever deploys the stack, never by a job's author."""

from lambda_runtime.policy.model import (
    DEFAULT_ENVIRONMENT,
    Environment,
    ForkPolicy,
    Policy,
    PolicyError,
    TriggerEvent,
    load_policy,
    load_policy_file,
    permissive_policy,
)

__all__ = [
    "DEFAULT_ENVIRONMENT",
    "Environment",
    "ForkPolicy",
    "Policy",
    "PolicyError",
    "TriggerEvent",
    "load_policy",
    "load_policy_file",
    "permissive_policy",
]
