"""Prometheus metrics of the bridge, the worker, the notifier and the console (one process each).

Bridge and worker serve them on their `metrics_port`; the console on its own /metrics.
Stage labels are folded (`joined-7` -> `joined`) to keep label sets small.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("huxue.metrics")

LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# bridge
BRIDGE_MESSAGES = Counter("huxue_bridge_messages", "MQTT messages received")
BRIDGE_RECORDS = Counter("huxue_bridge_records", "Records Kafka confirmed, by topic", ["topic"])
BRIDGE_DLQ = Counter("huxue_bridge_dlq", "Messages rejected to the DLQ, by reason", ["reason"])
BRIDGE_FAILURES = Counter("huxue_bridge_kafka_failures", "Records Kafka did not take (redelivered later)")
BRIDGE_PRODUCE = Histogram("huxue_bridge_produce_seconds", "MQTT arrival to Kafka confirmation", buckets=LATENCY)
BRIDGE_INFLIGHT = Gauge("huxue_bridge_inflight", "MQTT messages waiting for Kafka (not yet acknowledged)")
# Events that arrived at QoS 0: the broker does not keep those for an offline bridge.
# No per-device label (100k devices); the bridge's progress log names the top devices.
BRIDGE_QOS0 = Counter("huxue_bridge_qos0_events", "Events that arrived at QoS 0 (lost when published while the bridge is down)")
BRIDGE_PRIORITY = Counter("huxue_bridge_priority_messages", "Messages received on the panic-button priority lane")

# worker
WORKER_INPUTS = Counter("huxue_worker_inputs", "Records processed, by kind", ["kind"])
WORKER_ALERTS = Counter("huxue_worker_alerts", "Alerts emitted, by rule and stage", ["rule", "stage"])
WORKER_REJECTED = Counter("huxue_worker_commands_rejected", "Commands rejected, by reason", ["reason"])
WORKER_OPEN = Gauge("huxue_worker_open_incidents", "Open incidents of this worker's schools, by severity", ["severity"])
WORKER_LATENESS = Histogram("huxue_worker_deadline_lateness_seconds", "How late a deadline stage fired versus due", buckets=LATENCY)
WORKER_LAG = Gauge("huxue_worker_consumer_lag", "Records not yet processed, by topic", ["topic"])
WORKER_DLQ = Counter("huxue_worker_dead_lettered", "Inputs and failures the worker dead-lettered, by reason", ["reason"])
WORKER_RULE_FAILURES = Counter("huxue_worker_rule_failures", "Inputs a rule failed on (the rule's state kept as before), by rule", ["rule"])
WORKER_FORWARDED = Counter("huxue_worker_forwarded", "Records forwarded to their school's partition (placed by another partitioner), by kind", ["kind"])

# console
CONSOLE_APPLIED = Counter("huxue_console_records_applied", "Kafka records applied to the history store")
CONSOLE_LAG = Gauge("huxue_console_store_lag", "Records the history store is behind the topics")
CONSOLE_CLIENTS = Gauge("huxue_console_live_clients", "Browsers following live updates")
CONSOLE_REQUESTS = Counter("huxue_console_requests", "HTTP requests, by route and status", ["route", "status"])

# notifier
NOTIFIER_ATTEMPTS = Counter("huxue_notifier_attempts", "Delivery attempts, by receiver and outcome (delivered, retrying, failed)", ["receiver", "outcome"])
NOTIFIER_SKIPPED = Counter("huxue_notifier_skipped", "Alerts or deliveries recorded without paging, by reason", ["reason"])
NOTIFIER_LATENCY = Histogram("huxue_notifier_latency_seconds", "Alert sent to delivered, by receiver", ["receiver"], buckets=LATENCY)
NOTIFIER_FAILING = Gauge("huxue_notifier_receiver_failing", "1 while paging to the receiver is failing", ["receiver"])
NOTIFIER_INFLIGHT = Gauge("huxue_notifier_inflight", "Alerts being delivered")


def stage_label(stage: str) -> str:
    return stage.split("-")[0]


def serve(port: int, bind: str = "127.0.0.1") -> None:
    """Serve /metrics from a background thread (port 0: off)."""
    if not port:
        return
    try:
        start_http_server(port, addr=bind)
    except OSError as exc:  # metrics are worth less than the pipeline: run without them
        log.warning("metrics port unavailable, serving no metrics", extra={"port": port, "error": exc.strerror})
        return
    log.info("metrics", extra={"url": f"http://{bind}:{port}/metrics"})


# what `huxue stack status` prints from each component's /metrics
KEY = {
    "bridge": ("huxue_bridge_messages_total", "huxue_bridge_dlq_total", "huxue_bridge_inflight", "huxue_bridge_kafka_failures_total",
               "huxue_bridge_qos0_events_total"),
    "worker": ("huxue_worker_open_incidents", "huxue_worker_alerts_total", "huxue_worker_consumer_lag", "huxue_worker_deadline_lateness_seconds_sum",
               "huxue_worker_deadline_lateness_seconds_count"),
    "notifier": ("huxue_notifier_attempts_total", "huxue_notifier_receiver_failing", "huxue_notifier_inflight"),
    "console": ("huxue_console_store_lag", "huxue_console_live_clients", "huxue_console_records_applied_total"),
}


def scrape(url: str, names: tuple[str, ...], timeout: float = 1.0) -> dict[str, float] | None:
    """Sum the samples of `names` at a /metrics URL (labels folded); None if unreachable."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out
