"""An SQS event source mapping, locally: poll a queue, hand batches to a handler, honour
``batchItemFailures``. Failed messages become visible again after a short delay, as they do
after the visibility timeout on AWS."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lambda_runtime.logs import logger


class QueuePump:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        handler: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        batch_size: int = 10,
        concurrency: int = 4,
        retry_delay_seconds: int = 1,
        name: str = "pump",
        batch_ack: bool = False,
    ):
        """``batch_ack``: acknowledge each batch in one call. The engine's pumps stand for event
        source mappings and acknowledge message by message, with the calls their functions' roles
        grant (the IAM-enforcement tests hold them to it); the stack's own events log batches."""
        self._sqs = sqs
        self._url = queue_url
        self._handler = handler
        self._batch = batch_size
        self._retry_delay = retry_delay_seconds
        self._batch_ack = batch_ack
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=name)
        self._slots = threading.Semaphore(concurrency)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.batches = 0
        self.failures = 0
        self.errors: list[BaseException] = []

    def start(self) -> QueuePump:
        self._thread.start()
        return self

    def signal_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        """Stop polling and wait for batches in flight; a long poll still open is abandoned (daemon)."""
        self._stop.set()
        self._thread.join(timeout=0.1)
        self._pool.shutdown(wait=True, cancel_futures=False)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._slots.acquire()
            if self._stop.is_set():
                self._slots.release()
                return
            try:
                resp = self._sqs.receive_message(
                    QueueUrl=self._url, MaxNumberOfMessages=self._batch, WaitTimeSeconds=1, AttributeNames=["All"]
                )
            except Exception as exc:  # the endpoint is going away, or a transient error
                self._slots.release()
                if self._stop.wait(0.2):
                    return
                logger.debug("receive failed", extra={"error": str(exc)})
                continue
            messages = resp.get("Messages", [])
            if not messages:
                self._slots.release()
                continue
            try:
                self._pool.submit(self._deliver, messages)
            except RuntimeError:  # stopped meanwhile: the messages become visible again later
                return

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        try:
            event = {
                "Records": [
                    {
                        "messageId": m["MessageId"],
                        "receiptHandle": m["ReceiptHandle"],
                        "body": m["Body"],
                        "attributes": m.get("Attributes", {}),
                        "messageAttributes": {},
                        "md5OfBody": m.get("MD5OfBody", ""),
                        "eventSource": "aws:sqs",
                        "eventSourceARN": self._url,
                        "awsRegion": "us-east-1",
                    }
                    for m in messages
                ]
            }
            try:
                answer = self._handler(event) or {}
                failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
            except Exception as exc:  # the whole batch failed, like a Lambda error
                self.errors.append(exc)
                logger.exception("handler raised; batch goes back to the queue")
                failed = {m["MessageId"] for m in messages}
            self.batches += 1
            self.failures += len(failed)
            if self._batch_ack:
                self._acknowledge_batch(messages, failed)
                return
            for m in messages:
                try:
                    if m["MessageId"] in failed:
                        self._sqs.change_message_visibility(
                            QueueUrl=self._url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=self._retry_delay
                        )
                    else:
                        self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=m["ReceiptHandle"])
                except Exception:
                    logger.debug("ack failed")
        finally:
            self._slots.release()

    def _acknowledge_batch(self, messages: list[dict[str, Any]], failed: set[str]) -> None:
        """One call for the batch's successes and one for its failures (a message not acknowledged
        comes back anyway)."""
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages) if m["MessageId"] not in failed]
        again = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": self._retry_delay}
                 for i, m in enumerate(messages) if m["MessageId"] in failed]
        try:
            if done:
                self._sqs.delete_message_batch(QueueUrl=self._url, Entries=done)
            if again:
                self._sqs.change_message_visibility_batch(QueueUrl=self._url, Entries=again)
        except Exception:
            logger.debug("ack failed")
