"""Alarms and metrics: dead letters, function errors, a failing watchdog, and the watchdog's timeouts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration, Names
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

# The watchdog's Succeed state after it wrote timed_out (lambda_runtime/watchdog/definition.json)
TIMED_OUT_STATE = "TimedOutReported"
WATCHDOG_TIMEOUTS_METRIC = "WatchdogTimeouts"
PERIOD = Duration.minutes(5)


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        dead_letter_queues: Mapping[str, sqs.IQueue],
        functions: Mapping[str, lambda_.IFunction],
        watchdog: sfn.IStateMachine,
        watchdog_log_group: logs.ILogGroup,
        api: apigw.RestApi,
        alarm_topic: sns.ITopic | None,
    ) -> None:
        super().__init__(scope, id)
        self._dead_letter_queues = dict(dead_letter_queues)
        self._functions = dict(functions)
        # one namespace per pipeline: two deployments in an account never mix their counts
        self.namespace = f"IacCi/{Names.unique_id(scope)}"
        logs.MetricFilter(
            self, "WatchdogTimeoutsFilter",
            log_group=watchdog_log_group,
            metric_namespace=self.namespace,
            metric_name=WATCHDOG_TIMEOUTS_METRIC,
            filter_pattern=logs.FilterPattern.all(
                logs.FilterPattern.string_value("$.type", "=", "SucceedStateEntered"),
                logs.FilterPattern.string_value("$.details.name", "=", TIMED_OUT_STATE),
            ),
            metric_value="1",
            default_value=0,
        )
        alarms: list[cloudwatch.Alarm] = []
        for name, queue in self._dead_letter_queues.items():
            depth = queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
            alarms.append(self._alarm(f"{name}Messages", depth,
                                      f"iac-ci: messages in {name} (events that could not be processed)"))
        for name, function in self._functions.items():
            alarms.append(self._alarm(
                f"{name}Errors", function.metric_errors(period=PERIOD, statistic="Sum"),
                f"iac-ci: the {name.lower()} function reported errors"))
        alarms.append(self._alarm(
            "WatchdogExecutionsFailed", watchdog.metric_failed(period=PERIOD, statistic="Sum"),
            "iac-ci: watchdog executions failed, so timeouts may not be enforced"))
        alarms.append(self._alarm(
            "ApiServerErrors", api.metric_server_error(period=PERIOD, statistic="Sum"),
            "iac-ci: the API answered with 5XX errors"))
        if alarm_topic is not None:
            for alarm in alarms:
                alarm.add_alarm_action(actions.SnsAction(alarm_topic))
                alarm.add_ok_action(actions.SnsAction(alarm_topic))
        self.alarms: tuple[cloudwatch.IAlarm, ...] = tuple(alarms)

    def _alarm(self, id: str, metric: cloudwatch.IMetric, description: str) -> cloudwatch.Alarm:
        return cloudwatch.Alarm(
            self, id, metric=metric, threshold=1, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING, alarm_description=description,
        )

    def metric_dead_letter_messages(self, **props: Any) -> cloudwatch.IMetric:
        metrics = {
            f"q{i}": q.metric_approximate_number_of_messages_visible(statistic="Maximum")
            for i, q in enumerate(self._dead_letter_queues.values())
        }
        return cloudwatch.MathExpression(
            expression=" + ".join(metrics), using_metrics=metrics,
            label=props.pop("label", "Dead-letter messages"), period=props.pop("period", PERIOD), **props)

    def metric_function_errors(self, **props: Any) -> cloudwatch.IMetric:
        metrics = {f"f{i}": f.metric_errors(statistic="Sum") for i, f in enumerate(self._functions.values())}
        return cloudwatch.MathExpression(
            expression=" + ".join(metrics), using_metrics=metrics,
            label=props.pop("label", "Function errors"), period=props.pop("period", PERIOD), **props)

    def metric_watchdog_timeouts(self, **props: Any) -> cloudwatch.IMetric:
        return cloudwatch.Metric(
            namespace=self.namespace, metric_name=WATCHDOG_TIMEOUTS_METRIC,
            statistic=props.pop("statistic", "Sum"), period=props.pop("period", PERIOD), **props)
