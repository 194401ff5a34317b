"""The ``Schedules`` namespace: the deployment's EventBridge Scheduler group and the role it sends with.

Schedules fire into the packaging function's queue, the consumer that turns a firing into a run
(``lambda_runtime.pipelines.schedules``). The runtime creates and deletes the schedules of
``.iac-ci.yml`` files in this group; the role Scheduler assumes may do nothing but send to that
queue, so whoever can create a schedule in the group (the packaging function) gains nothing
beyond starting a run. The owner's own schedules (``props.schedules``) are synthesized in a group
of their own, which the runtime cannot touch (a reconcile never deletes them, and a repository's
config cannot take their names), in the message format the runtime reads (``ScheduledJob`` with
``owner``), so ``cdk synth`` shows what will fire.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from iac_ci_constructs import iam as policies
from iac_ci_constructs.props import IacCiPipelineProps
from lambda_runtime.pipelines.schedules import ScheduledJob

SCHEDULER_SERVICE = "scheduler.amazonaws.com"
TIMEZONE = "UTC"  # the cron of ScheduledJob is UTC, as the runtime reconciles it


@dataclass(frozen=True)
class Schedules:
    group: scheduler.CfnScheduleGroup
    role: iam.Role  # what every schedule of the group sends with
    queue: sqs.IQueue  # where they send: the packaging function's queue
    owner_group: scheduler.CfnScheduleGroup | None = None  # the owner's schedules (``props.schedules``)

    @property
    def group_name(self) -> str:
        return self.group.ref


def build_schedules(scope: Construct, props: IacCiPipelineProps, *, queue: sqs.IQueue) -> Schedules:
    """``scope/Schedules``: the group (named by CloudFormation, so stacks never collide), the
    scheduler role and one schedule per ``props.schedules`` entry."""
    group = Construct(scope, "Schedules")
    schedule_group = scheduler.CfnScheduleGroup(group, "Group")
    # aws:SourceAccount: only Scheduler acting for this account may assume it (confused deputy)
    role = iam.Role(group, "Role", description="iac-ci schedules: send their firings to the packaging queue",
                    assumed_by=iam.ServicePrincipal(SCHEDULER_SERVICE, conditions={
                        "StringEquals": {"aws:SourceAccount": Stack.of(scope).account}}))
    for statement in policies.scheduler(queue=queue):
        role.add_to_principal_policy(statement)
    owner_group = None
    if props.schedules:
        owner_group = scheduler.CfnScheduleGroup(group, "OwnerGroup")
        for job in props.schedules:
            _schedule(group, dataclasses.replace(job, owner=True), group_name=owner_group.ref, queue=queue,
                      role=role)
    return Schedules(group=schedule_group, role=role, queue=queue, owner_group=owner_group)


def _schedule(scope: Construct, job: ScheduledJob, *, group_name: str, queue: sqs.IQueue,
              role: iam.IRole) -> scheduler.CfnSchedule:
    """One owner-declared schedule, with the arguments ``Schedules.reconcile`` would create it with;
    its construct id is its name, so reordering ``schedules`` replaces nothing."""
    target = job.target(queue.queue_arn, role.role_arn)
    retry = target["RetryPolicy"]
    return scheduler.CfnSchedule(
        scope, job.name,
        name=job.name, group_name=group_name,
        schedule_expression=job.expression, schedule_expression_timezone=TIMEZONE,
        flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
        state="ENABLED",
        target=scheduler.CfnSchedule.TargetProperty(
            arn=target["Arn"], role_arn=target["RoleArn"], input=target["Input"],
            retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                maximum_event_age_in_seconds=retry["MaximumEventAgeInSeconds"],
                maximum_retry_attempts=retry["MaximumRetryAttempts"])),
    )
