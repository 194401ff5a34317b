"""Create the engine's resources on an AWS-compatible endpoint from the shared definitions.

The same ``schema.tables`` and watchdog definition the CDK construct synthesizes, so what the
embedded runner (and every test) exercises is what gets deployed. Idempotent: existing
resources are reused, which is what ``--endpoint-url`` against a long-lived server needs.
"""

from __future__ import annotations

import json
import secrets as pysecrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lambda_runtime import watchdog
from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.schema import deployment
from lambda_runtime.schema import events as event_schema
from lambda_runtime.schema.tables import TABLES, TableDef
from lambda_runtime.settings import Settings

ACCOUNT = "123456789012"
PROVISIONED_SERVICES = ("dynamodb", "s3", "sqs", "kms", "secretsmanager", "scheduler", "stepfunctions", "events")


@dataclass(frozen=True)
class Queues:
    packaging_url: str
    callbacks_url: str
    events_url: str = ""  # what the events rule delivers to (``EmbeddedStack`` writes it to events.jsonl)


def resource_names(prefix: str = "iac-ci") -> dict[str, str]:
    return {
        "orders_table": f"{prefix}-orders",
        "events_table": f"{prefix}-order-events",
        "locks_table": f"{prefix}-orchestrator-locks",
        "idempotency_table": f"{prefix}-idempotency",
        "internal_bucket": f"{prefix}-internal",
        "done_bucket": f"{prefix}-done",
        "state_bucket": f"{prefix}-state",
        "packaging_queue": f"{prefix}-packaging",
        "callbacks_queue": f"{prefix}-callbacks",
        "watchdog": f"{prefix}-watchdog",
        # outside every job prefix (``<prefix>/`` is the default one): the engine's own credential
        "webhook_secret": f"{prefix}-engine/api-signing-key",
        "log_link_secret": f"{prefix}-engine/log-link-key",  # signs links to run logs (intake.log_links)
        "kms_alias": f"alias/{prefix}-sops",
        "schedule_group": f"{prefix}-schedules",
        "scheduler_role": f"{prefix}-scheduler",
        # notifications: a bus of its own (several stacks share one moto server), a rule taking
        # every iac-ci event to a queue
        "event_bus": f"{prefix}-events",
        "events_queue": f"{prefix}-events",
        "events_rule": f"{prefix}-events-to-log",
    }


def table_name_for(table: TableDef, names: dict[str, str]) -> str:
    return {
        "orders": names["orders_table"],
        "order_events": names["events_table"],
        "orchestrator_locks": names["locks_table"],
        "idempotency": names["idempotency_table"],
    }[table.logical_name]


def provision(
    clients: AwsClients,
    *,
    prefix: str = "iac-ci",
    region: str = "us-east-1",
    webhook_secret: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Settings, Queues]:
    names = resource_names(prefix)
    bus = (overrides or {}).get("event_bus", names["event_bus"])
    for service in PROVISIONED_SERVICES:  # built one at a time (a boto3 session is not thread-safe), then shared
        clients.client(service)
    # independent resources in parallel: each is a few calls, and the server answers them side by side
    with ThreadPoolExecutor(8) as pool:
        watchdog_arn = pool.submit(_ensure_state_machine, clients.sfn, names["watchdog"])
        tables = [pool.submit(_ensure_table, clients.dynamodb, t, table_name_for(t, names)) for t in TABLES]
        buckets = [pool.submit(_ensure_bucket, clients.s3, names[b])
                   for b in ("internal_bucket", "done_bucket", "state_bucket")]
        packaging = pool.submit(_ensure_queue, clients.sqs, names["packaging_queue"])
        callbacks = pool.submit(_ensure_queue, clients.sqs, names["callbacks_queue"])
        kms_arn = pool.submit(_ensure_key, clients.kms, names["kms_alias"])
        secret_id = pool.submit(_ensure_secret, clients.secrets, names["webhook_secret"], webhook_secret)
        log_link_secret_id = pool.submit(_ensure_secret, clients.secrets, names["log_link_secret"], None)
        group = pool.submit(_ensure_schedule_group, clients.scheduler, names["schedule_group"])
        # an override may name another bus (``default`` ...), or none to publish nothing
        events_url = pool.submit(_ensure_event_log, clients, bus, names) if bus else None
        for done in (*tables, *buckets, group):
            done.result()
        (packaging_url, packaging_arn), (callbacks_url, callbacks_arn) = packaging.result(), callbacks.result()
        _notify_queues(clients, names, prefix, {"packaging": packaging_arn, "orchestrator": callbacks_arn})
        settings = _settings(names, prefix, region, kms_arn=kms_arn.result(), secret_id=secret_id.result(),
                             log_link_secret_id=log_link_secret_id.result(), packaging_arn=packaging_arn)
        queues = Queues(packaging_url, callbacks_url, events_url.result() if events_url is not None else "")
        final = Settings.model_validate({**settings.model_dump(), "watchdog_arn": watchdog_arn.result(),
                                         **(overrides or {})})
    return final, queues


def _notify_queues(clients: AwsClients, names: dict[str, str], prefix: str, queue_of: dict[str, str]) -> None:
    clients.s3.put_bucket_notification_configuration(
        Bucket=names["internal_bucket"],
        NotificationConfiguration={"QueueConfigurations": [
            _notification(queue_of[function], key_prefix) for key_prefix, function in deployment.NOTIFICATIONS.items()
        ]},
    )


def _settings(names: dict[str, str], prefix: str, region: str, *, kms_arn: str, secret_id: str,
              log_link_secret_id: str, packaging_arn: str) -> Settings:
    return Settings(
        orders_table=names["orders_table"],
        events_table=names["events_table"],
        locks_table=names["locks_table"],
        idempotency_table=names["idempotency_table"],
        internal_bucket=names["internal_bucket"],
        done_bucket=names["done_bucket"],
        state_bucket=names["state_bucket"],
        kms_key_arn=kms_arn,
        watchdog_arn="pending",
        webhook_secret_id=secret_id,
        log_link_secret_id=log_link_secret_id,
        worker_function=f"{prefix}-worker",
        codebuild_project=f"{prefix}-worker",
        region=region,
        embedded=True,
        schedule_group=names["schedule_group"],
        # moto's Scheduler stores the role without assuming it: serve fires the schedules itself
        scheduler_role_arn=f"arn:aws:iam::{packaging_arn.split(':')[4]}:role/{names['scheduler_role']}",
        schedule_queue_arn=packaging_arn,
        event_bus=names["event_bus"],
        deployment_name=prefix,
    )


def _notification(queue_arn: str, prefix: str) -> Any:  # a QueueConfigurationTypeDef
    return {
        "QueueArn": queue_arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
    }


def _ensure_table(ddb: Any, table: TableDef, name: str) -> None:
    try:
        ddb.create_table(**table.create_table_kwargs(name))
    except Exception as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
        return
    if table.ttl_attribute:
        ddb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute}
        )


def _ensure_bucket(s3: Any, name: str) -> None:
    try:
        s3.create_bucket(Bucket=name)
    except Exception as exc:
        if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def _ensure_schedule_group(scheduler: Any, name: str) -> None:
    try:
        scheduler.create_schedule_group(Name=name)
    except Exception as exc:
        if error_code(exc) != "ConflictException":
            raise


def _ensure_event_log(clients: AwsClients, bus: str, names: dict[str, str]) -> str:
    """The rule taking every iac-ci event on ``bus`` (created unless it exists) to the events queue;
    returns the queue's URL."""
    events = clients.events
    if bus != "default":
        try:
            events.create_event_bus(Name=bus)
        except Exception as exc:
            if error_code(exc) != "ResourceAlreadyExistsException":
                raise
    url, arn = _ensure_queue(clients.sqs, names["events_queue"])
    rule_arn = events.put_rule(Name=names["events_rule"], EventBusName=bus, State="ENABLED",
                               EventPattern=json.dumps({"source": [event_schema.SOURCE]}))["RuleArn"]
    # what AWS needs for the rule to deliver (moto does not check it)
    clients.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                       "Action": "sqs:SendMessage", "Resource": arn,
                       "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}}],
    })})
    events.put_targets(Rule=names["events_rule"], EventBusName=bus, Targets=[{"Id": "events-log", "Arn": arn}])
    return url


def _ensure_queue(sqs: Any, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _ensure_key(kms: Any, alias: str) -> str:
    try:
        return str(kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"])
    except Exception as exc:
        if error_code(exc) != "NotFoundException":
            raise
    arn = kms.create_key(Description="iac-ci sops bundles")["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=alias, TargetKeyId=arn)
    return str(arn)


def _ensure_secret(sm: Any, name: str, value: str | None) -> str:
    try:
        arn = sm.describe_secret(SecretId=name)["ARN"]
        if value is not None:
            sm.put_secret_value(SecretId=name, SecretString=value)
        return str(arn)
    except Exception as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
    return str(sm.create_secret(Name=name, SecretString=value or pysecrets.token_hex(32))["ARN"])


def _ensure_state_machine(sfn: Any, name: str) -> str:
    arn = f"arn:aws:states:{sfn.meta.region_name}:{ACCOUNT}:stateMachine:{name}"
    try:
        sfn.describe_state_machine(stateMachineArn=arn)
        sfn.update_state_machine(stateMachineArn=arn, definition=watchdog.definition_text())
        return arn
    except Exception as exc:
        if error_code(exc) != "StateMachineDoesNotExist":
            raise
    resp = sfn.create_state_machine(
        name=name,
        definition=json.dumps(watchdog.definition()),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}",
        type="STANDARD",
    )
    return str(resp["stateMachineArn"])
