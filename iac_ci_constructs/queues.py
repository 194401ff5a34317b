"""The ``Queues`` namespace: each S3 prefix of the internal bucket notifies its consumer's queue.

A consumer's queue has a dead-letter queue (after five receives); the worker's asynchronous
invocations that fail land in a queue of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from iac_ci_constructs import defaults
from iac_ci_constructs.functions import FUNCTION_TIMEOUT_SECONDS
from lambda_runtime.schema import deployment

QUEUE_IDS = {"packaging": "Packaging", "orchestrator": "Callbacks"}  # consumer -> queue construct id prefix
WORKER_FAILURE_QUEUE = "WorkerFailureQueue"


@dataclass(frozen=True)
class Queues:
    queues: Mapping[str, sqs.Queue]  # by consumer (schema.deployment.NOTIFICATIONS' values)
    dead_letter_queues: Mapping[str, sqs.Queue]  # by consumer
    worker_failure_queue: sqs.Queue

    @property
    def dead_letters_by_name(self) -> dict[str, sqs.IQueue]:
        """Every queue whose messages are failures, by construct id (the alarms' names)."""
        named: dict[str, sqs.IQueue] = {f"{QUEUE_IDS[c]}DeadLetterQueue": q for c, q in self.dead_letter_queues.items()}
        return named | {WORKER_FAILURE_QUEUE: self.worker_failure_queue}


def build_queues(scope: Construct, internal_bucket: s3.IBucket) -> Queues:
    """``scope/Queues``, and the internal bucket's notifications to them."""
    group = Construct(scope, "Queues")
    queues: dict[str, sqs.Queue] = {}
    dead_letter_queues: dict[str, sqs.Queue] = {}
    for consumer in dict.fromkeys(deployment.NOTIFICATIONS.values()):
        name = QUEUE_IDS[consumer]
        dlq = defaults.queue(group, f"{name}DeadLetterQueue")
        dead_letter_queues[consumer] = dlq
        queues[consumer] = defaults.queue(
            group, f"{name}Queue", dead_letter_queue=dlq,
            # a message is redelivered only once its consumer has certainly given up on it
            visibility_timeout=Duration.seconds(
                deployment.QUEUE_VISIBILITY_FACTOR * FUNCTION_TIMEOUT_SECONDS[consumer]),
        )
    for prefix, consumer in deployment.NOTIFICATIONS.items():
        internal_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED, s3n.SqsDestination(queues[consumer]), s3.NotificationKeyFilter(prefix=prefix))
    worker_failures = defaults.queue(group, WORKER_FAILURE_QUEUE)
    return Queues(queues=queues, dead_letter_queues=dead_letter_queues, worker_failure_queue=worker_failures)
