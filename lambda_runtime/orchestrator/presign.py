"""The worker's capabilities: presigned URLs for exactly its bundle, log (final and live), result and inputs."""

from __future__ import annotations

from typing import Any

from lambda_runtime.schema import layout
from lambda_runtime.schema.contract import InputUrl, WorkerPayload
from lambda_runtime.schema.records import OrderRecord


def worker_payload(
    s3: Any, *, bucket: str, run_id: str, order: OrderRecord, trace_id: str, attempt: int, expires_in: int,
    not_after: float | None = None, secrets_key: str | None = None, mask_key: str | None = None,
) -> WorkerPayload:
    name = order.name

    def url(method: str, key: str, **extra: str) -> str:
        return str(
            s3.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key, **extra}, ExpiresIn=expires_in)
        )

    return WorkerPayload(
        run_id=run_id,
        order=name,
        attempt=attempt,
        trace_id=trace_id,
        not_after=not_after,
        timeout=order.timeout,
        image=order.image,
        privileged=order.privileged,
        bundle_url=url("get_object", layout.bundle_key(run_id, name)),
        log_url=url("put_object", layout.log_key(run_id, name)),
        live_log_url=url("put_object", layout.live_log_key(run_id, name)),
        # If-None-Match is signed in: the first of worker and watchdog to report wins, nobody overwrites
        result_url=url("put_object", layout.result_key(run_id, name), IfNoneMatch="*"),
        artifacts_url=url("put_object", layout.artifacts_key(run_id, name)) if order.has_artifacts else None,
        secrets_url=url("get_object", secrets_key) if secrets_key else None,
        mask_url=url("get_object", mask_key) if mask_key else None,
        inputs=[
            InputUrl(
                from_order=i.from_order, path=i.path,
                # an apply run's input may be its plan run's artifact (the saved plan file)
                url=url("get_object", layout.artifacts_key(i.run_id or run_id, i.from_order)),
            )
            for i in order.inputs
        ],
    )
