"""Every secret of a run is masked in every order's log, also in an order that was never given it:
an order that prints another order's artifact (a rendered kubeconfig, a plan file) does not leak it.
The second order holds only salted digests, never the value (checked in its payload objects)."""

from __future__ import annotations

import base64
import secrets

import pytest

from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.schema import layout

pytestmark = pytest.mark.slow


def test_an_order_printing_another_orders_secret_is_masked(aws) -> None:
    canary = "tok-" + secrets.token_hex(16)
    stack = EmbeddedStack(aws, prefix="m" + secrets.token_hex(4), settings_overrides={"watchdog_grace_seconds": 3})
    stack.clients.s3.put_bucket_versioning(Bucket=stack.settings.internal_bucket,
                                           VersioningConfiguration={"Status": "Enabled"})
    stack.clients.ssm.put_parameter(Name="/iac-ci/mask/token", Value=canary, Type="SecureString")
    job = {"name": "spill", "username": "tester", "orders": [
        {"name": "render", "target": "lambda", "artifacts": ["out"],
         "secrets": [{"env": "TOKEN", "ssm": "/iac-ci/mask/token"}],
         "cmds": ["mkdir -p out", 'printf "token: %s\\n" "$TOKEN" > out/config.yaml',
                  'printf "%s" "$TOKEN" | base64 > out/config.b64']},
        {"name": "show", "target": "lambda", "depends_on": ["render"],
         "inputs": [{"from": "render", "path": "out"}],
         "cmds": ["cat out/config.yaml", "cat out/config.b64", 'echo "env has no token: ${TOKEN:-none}"']},
    ]}
    with stack:
        code, body = stack.submit(job)
        assert code == 202, body
        done = stack.wait(body["run_id"], timeout=90)
    run_id = body["run_id"]
    assert done["status"] == "succeeded", done
    tail = done["orders"]["show"]["log_tail"]
    assert "token: ***" in tail and "env has no token: none" in tail and canary not in tail
    s3, bucket = stack.clients.s3, stack.settings.internal_bucket
    log = s3.get_object(Bucket=bucket, Key=layout.log_key(run_id, "show"))["Body"].read().decode()
    assert "token: ***" in log and canary not in log
    assert base64.b64encode(canary.encode()).decode()[:20] not in log
    # what "show" was handed: digests, never the value
    handed = s3.get_object(Bucket=bucket, Key=layout.mask_input_key(run_id, "show"))["Body"].read().decode()
    assert canary not in handed and '"salt"' in handed
    assert all(canary not in s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
               .decode("latin-1")
               for v in s3.list_object_versions(Bucket=bucket, Prefix=layout.order_prefix(run_id, "show"))
               .get("Versions", []) if not v["Key"].endswith(".tar.gz"))
