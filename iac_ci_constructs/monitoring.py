"""Alarms, metrics and the dashboard: dead letters, function errors, a failing watchdog, the
watchdog's timeouts, and the runs' and orders' own metrics.

The run and order metrics are EMF documents the orchestrator writes to its log
(``lambda_runtime.observability.metrics``, which names and defines each one) in the deployment's
namespace (``metrics_namespace``: ``IacCi/<the pipeline's unique id>``, in the functions'
``POWERTOOLS_METRICS_NAMESPACE``), so two deployments in an account never mix their counts. The
dashboard (``dashboard=True``, the default) shows them beside the services' own metrics.
"""

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

from lambda_runtime.observability import metrics as emf
from lambda_runtime.schema.status import ORDER_FINAL, RUN_FINAL

# The watchdog's Succeed state after it wrote timed_out (lambda_runtime/watchdog/definition.json)
TIMED_OUT_STATE = "TimedOutReported"
WATCHDOG_TIMEOUTS_METRIC = "WatchdogTimeouts"
PERIOD = Duration.minutes(5)
PERCENTILES = ("p50", "p90", "p99")
WIDGET_HEIGHT = 6


def metrics_namespace(pipeline: Construct) -> str:
    """The deployment's metric namespace: one per pipeline, stable across deployments of it."""
    return f"IacCi/{Names.unique_id(pipeline)}"


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
        dashboard: bool = True,
    ) -> None:
        super().__init__(scope, id)
        self._dead_letter_queues = dict(dead_letter_queues)
        self._functions = dict(functions)
        self._watchdog = watchdog
        self._api = api
        # one namespace per pipeline: two deployments in an account never mix their counts
        self.namespace = metrics_namespace(scope)
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
        self.dashboard: cloudwatch.Dashboard | None = self._dashboard() if dashboard else None

    def _alarm(self, id: str, metric: cloudwatch.IMetric, description: str) -> cloudwatch.Alarm:
        return cloudwatch.Alarm(
            self, id, metric=metric, threshold=1, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING, alarm_description=description,
        )

    # ---- the dashboard --------------------------------------------------------------------------
    def _dashboard(self) -> cloudwatch.Dashboard:
        """Rows, top to bottom: what the runs and orders did, how long they waited and ran, how the
        functions, queues, watchdog and API behaved, and the alarms."""
        functions = self._functions.items()
        queues = self._dead_letter_queues.items()
        api = self._api

        def graph(title: str, left: list[cloudwatch.IMetric], *, width: int, stacked: bool = False,
                  unit: str | None = None) -> cloudwatch.GraphWidget:
            axis = cloudwatch.YAxisProps(label=unit, show_units=False, min=0) if unit else None
            return cloudwatch.GraphWidget(title=title, left=left, width=width, height=WIDGET_HEIGHT,
                                          stacked=stacked, left_y_axis=axis)

        def spread(metric: str, what: str) -> cloudwatch.GraphWidget:
            return graph(f"{what} (p50, p90, p99)", [self._emf(metric, statistic=p, label=p) for p in PERCENTILES],
                         width=8, unit="seconds")

        rows: list[list[cloudwatch.IWidget]] = [
            [cloudwatch.TextWidget(
                markdown=f"# iac-ci\nRun and order metrics are the orchestrator's EMF documents in namespace "
                         f"`{self.namespace}` (see the README's *Metrics, dashboard and traces*); each run is one "
                         "X-Ray trace, its run id an annotation (`annotation.run_id`).",
                width=24, height=2)],
            [graph("Runs by outcome", [self.metric_runs_finished(o) for o in sorted(RUN_FINAL)], width=12,
                   stacked=True),
             graph("Orders by outcome", [self.metric_orders_finished(o) for o in sorted(ORDER_FINAL)], width=12,
                   stacked=True)],
            [spread(emf.ORDER_DURATION, "Order duration"), spread(emf.QUEUE_WAIT, "Queue wait"),
             spread(emf.DISPATCH_LATENCY, "Dispatch latency")],
            [graph("Function errors", [f.metric_errors(statistic="Sum", label=n) for n, f in functions], width=8),
             graph("Function throttles", [f.metric_throttles(statistic="Sum", label=n) for n, f in functions],
                   width=8),
             graph("Function duration (p90)", [f.metric_duration(statistic="p90", label=n) for n, f in functions],
                   width=8, unit="ms")],
            [graph("Dead-letter depth", [q.metric_approximate_number_of_messages_visible(statistic="Maximum", label=n)
                                         for n, q in queues], width=6),
             graph("Watchdog", [self.metric_watchdog_timeouts(label="timeouts reported"),
                                self._watchdog.metric_failed(statistic="Sum", label="executions failed")], width=6),
             graph("API errors", [api.metric_client_error(statistic="Sum", label="4XX"),
                                  api.metric_server_error(statistic="Sum", label="5XX")], width=6),
             graph("API latency (p50, p90, p99)", [api.metric_latency(statistic=p, label=p) for p in PERCENTILES],
                   width=6, unit="ms")],
            [cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms), width=24, height=4)],
        ]
        return cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.hours(3), widgets=rows)

    # ---- metrics --------------------------------------------------------------------------------
    def _emf(self, name: str, *, dimensions: Mapping[str, str] | None = None, **props: Any) -> cloudwatch.Metric:
        """An EMF metric of the orchestrator: deployment-wide (its ``service`` dimension) unless
        ``dimensions`` (one of ``Outcome``, ``Target``) are given."""
        return cloudwatch.Metric(
            namespace=self.namespace, metric_name=name,
            dimensions_map=dict(dimensions) if dimensions else {emf.SERVICE_DIMENSION: emf.SERVICE},
            statistic=props.pop("statistic", "Sum"), period=props.pop("period", PERIOD), **props)

    def metric_runs_finished(self, outcome: str | None = None, **props: Any) -> cloudwatch.IMetric:
        """RunsFinished: runs that reached a final status (of ``outcome`` only, when given)."""
        return self._emf(emf.RUNS_FINISHED, dimensions={emf.OUTCOME: outcome} if outcome else None,
                         **{"label": outcome or "runs", **props})

    def metric_orders_finished(self, outcome: str | None = None, **props: Any) -> cloudwatch.IMetric:
        """OrdersFinished: orders that reached a final status (of ``outcome`` only, when given)."""
        return self._emf(emf.ORDERS_FINISHED, dimensions={emf.OUTCOME: outcome} if outcome else None,
                         **{"label": outcome or "orders", **props})

    def metric_timing(self, name: str, **props: Any) -> cloudwatch.IMetric:
        """One of the timings (``QueueWait``, ``DispatchLatency``, ``OrderDuration``, ``RunDuration``),
        in seconds; default statistic p90."""
        if name not in emf.TIMINGS:
            raise ValueError(f"metric_timing: {name!r} is not one of {', '.join(emf.TIMINGS)}")
        return self._emf(name, **{"statistic": "p90", **props})

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
