"""The embedded AWS in a process of its own: it comes up, counts, and never outlives its parent.

And what the server is spared (``server.start_moto``) changes nothing a caller can see: the
Batch backend still answers, symmetric and asymmetric KMS keys still work.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from support.waiting import wait_for

from iac_ci.embedded.aws_process import AwsProcess
from iac_ci.embedded.server import EmbeddedAws
from lambda_runtime.aws.clients import AwsClients

IAC_CI = str(Path(sys.executable).with_name("iac-ci"))


def processes_marked(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (the servers a test's CLI started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_server_process_answers_counts_and_stops() -> None:
    aws = EmbeddedAws.spawn(count_calls=True).ready()
    try:
        ddb = boto3.client("dynamodb", endpoint_url=aws.endpoint, region_name=aws.region,
                           aws_access_key_id="x", aws_secret_access_key="x")
        aws.reset_calls()  # the warm-up's own requests are not the caller's
        ddb.list_tables()
        ddb.list_tables()
        counted = aws.calls()
        assert counted.engine_calls()[("dynamodb", "ListTables")] == 2
        aws.reset_calls()
        assert aws.calls().engine_calls() == {}
    finally:
        aws.stop()
    with pytest.raises(Exception):  # noqa: B017 - gone: nothing listens there any more
        socket.create_connection(("127.0.0.1", int(aws.endpoint.rsplit(":", 1)[1])), timeout=1).close()


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "iac_ci.embedded.aws_process", "--port", str(port)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        process = AwsProcess(proc, open(os.devnull, "rb"), f"http://127.0.0.1:{port}")  # noqa: SIM115
        with pytest.raises(RuntimeError, match="did not start: .*(in use|Errno 98)"):
            process.wait_ready(30)
        process.stop()
        assert proc.returncode == 0  # it ended by itself when its stdin closed: it watches stdin from the start


def test_the_server_ends_with_its_parent_even_when_the_parent_is_killed(tmp_path: Path) -> None:
    marker = f"IAC_CI_TEST_MARK={uuid.uuid4().hex}"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from iac_ci.embedded.server import EmbeddedAws
        aws = EmbeddedAws.spawn().ready()
        print(aws.endpoint, flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True, env={**os.environ, marker.split("=")[0]: marker.split("=")[1]})
    assert parent.stdout is not None
    assert parent.stdout.readline().startswith("http://127.0.0.1:")
    servers = [p for p in processes_marked(marker) if p != parent.pid]
    assert len(servers) == 1
    parent.send_signal(signal.SIGKILL)  # no clean-up of its own: the server must notice by itself
    parent.wait()
    wait_for(lambda: not processes_marked(marker), timeout=15, what="the orphaned server to exit")


def test_a_refused_job_leaves_no_server_behind(tmp_path: Path) -> None:
    """``iac-ci run`` starts the server before the job is read; a job refused at once takes it along."""
    marker = uuid.uuid4().hex
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "bad", "orders": [{"name": "a", "cmds": ["true"], "depends_on": ["b"]}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
    began = time.monotonic()
    proc = subprocess.run([IAC_CI, "run", str(job)], capture_output=True, text=True,
                          env={**env, "IAC_CI_TEST_MARK": marker}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "depends_on" in proc.stderr
    wait_for(lambda: not processes_marked(marker), timeout=15, what="the unclaimed server to exit")
    assert time.monotonic() - began < 60


def test_what_the_server_is_spared_changes_nothing_a_caller_sees(clients: AwsClients) -> None:
    # the Batch backend, whose import the state-machine interpreter no longer pays for, still answers
    batch = clients.client("batch")
    assert batch.describe_compute_environments()["computeEnvironments"] == []
    # a symmetric key (its unused RSA material made on first use) encrypts; an RSA key signs at once
    kms = clients.kms
    symmetric = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=symmetric, Plaintext=b"canary")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"canary"
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    signed = kms.sign(KeyId=rsa, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
    assert kms.verify(KeyId=rsa, Message=b"m", Signature=signed, SigningAlgorithm="RSASSA_PSS_SHA_256")[
        "SignatureValid"]
    assert kms.get_public_key(KeyId=rsa)["PublicKey"].startswith(b"0\x82")  # DER: a real RSA public key


def test_a_cancelled_transaction_leaves_every_item_as_it_was(clients: AwsClients) -> None:
    """The server backs up the items a transaction names, not whole tables: a cancelled one must
    still change nothing, whether its items existed (updated, deleted) or not (put)."""
    ddb, name = clients.dynamodb, "txn-" + uuid.uuid4().hex[:8]
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    ddb.put_item(TableName=name, Item={"pk": {"S": "kept"}, "n": {"N": "1"}})
    ddb.put_item(TableName=name, Item={"pk": {"S": "doomed"}, "n": {"N": "1"}})
    before = sorted(str(i) for i in ddb.scan(TableName=name)["Items"])
    writes = [
        {"Update": {"TableName": name, "Key": {"pk": {"S": "kept"}}, "UpdateExpression": "SET n = :n",
                    "ExpressionAttributeValues": {":n": {"N": "2"}}}},
        {"Put": {"TableName": name, "Item": {"pk": {"S": "new"}, "n": {"N": "9"}}}},
        {"Delete": {"TableName": name, "Key": {"pk": {"S": "doomed"}}}},
    ]
    refused = {"Put": {"TableName": name, "Item": {"pk": {"S": "other"}},
                       "ConditionExpression": "attribute_exists(pk)"}}
    for cancelled in (writes + [refused], writes + [writes[0]]):  # a failed condition, then a key named twice
        with pytest.raises(Exception) as caught:
            ddb.transact_write_items(TransactItems=cancelled)
        assert caught.value.response["Error"]["Code"] in ("TransactionCanceledException", "ValidationException")
        assert sorted(str(i) for i in ddb.scan(TableName=name)["Items"]) == before
    ddb.transact_write_items(TransactItems=writes)  # and one that goes through writes all of it
    after = {i["pk"]["S"]: i["n"]["N"] for i in ddb.scan(TableName=name)["Items"]}
    assert after == {"kept": "2", "new": "9"}


def test_executions_of_one_definition_do_not_share_state(clients: AwsClients) -> None:
    """The parse of a definition is cached: two executions of it still run apart, each to its own end."""
    sfn, name = clients.sfn, "parse-" + uuid.uuid4().hex[:8]
    definition = ('{"StartAt": "Pick", "States": {"Pick": {"Type": "Choice", "Choices": [{"Variable": "$.go", '
                  '"StringEquals": "yes", "Next": "Yes"}], "Default": "No"}, "Yes": {"Type": "Pass", '
                  '"Result": {"took": "yes"}, "End": true}, "No": {"Type": "Fail", "Error": "No"}}}')
    arn = sfn.create_state_machine(name=name, definition=definition,
                                   roleArn="arn:aws:iam::123456789012:role/x")["stateMachineArn"]
    runs = {go: sfn.start_execution(stateMachineArn=arn, name=go, input=f'{{"go": "{go}"}}')["executionArn"]
            for go in ("yes", "no", "yes2")}

    def ended() -> dict[str, str] | None:
        states = {go: sfn.describe_execution(executionArn=a)["status"] for go, a in runs.items()}
        return states if "RUNNING" not in states.values() else None

    assert wait_for(ended, timeout=30, what="the executions to end") == {
        "yes": "SUCCEEDED", "no": "FAILED", "yes2": "FAILED"}
    assert json.loads(sfn.describe_execution(executionArn=runs["yes"])["output"]) == {"took": "yes"}
    with pytest.raises(Exception, match="ASLParserException"):  # a syntax error is still one
        sfn.create_state_machine(name=name + "-bad", definition='{"StartAt": ',
                                 roleArn="arn:aws:iam::123456789012:role/x")
