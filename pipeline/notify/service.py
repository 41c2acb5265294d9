"""`huxue notifier`: alerts topic -> receivers (HTTP), one record per attempt on notifications.

Threads: the main thread owns the Kafka consumer (kafka-python clients are used from one
thread) and commits; an asyncio loop in a second thread does the HTTP deliveries.

Guarantees:
- At most one successful delivery per (alert identifier, receiver), also across restarts:
  at start the notifier reads the notifications topic to learn what was delivered, and
  remembers what it delivers since. A crash between a receiver's 2xx and Kafka taking the
  `delivered` record delivers that page again after the restart: receivers get the same
  `Idempotency-Key` (the alert identifier) every time to drop such a duplicate.
- At least once otherwise: an alert's offset is committed only after every delivery of it
  finished (delivered, failed for good, or skipped) and Kafka acknowledged its records.

A failing receiver (policy.ReceiverHealth decides) gets a `receiver_failing` record for each
school whose page then fails there (once per failing spell and school); its next delivery
writes `receiver_recovered` for each of those schools. The worker's rule paging_health
turns these into incidents of the schools (rules/paging_health.py).

Concurrency (kept simple on purpose): records are taken in partition order and each alert
becomes a task; its receivers are paged concurrently, and up to `notify.max_in_flight`
alerts are in flight at once, so one slow or retrying receiver never holds up a panic for
the others. Offsets are committed per partition up to the first alert not finished yet.
When the window is full the partitions are paused (the consumer keeps polling, so it stays
in its group while a receiver is retried for minutes). Pages of one incident may therefore
arrive out of order when an earlier one is being retried; each carries its stage.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import yarl
from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.structs import OffsetAndMetadata

from pipeline import kafka_client, metrics
from pipeline.config import Config, ReceiverConfig
from pipeline.notify import messages, policy, routing
from pipeline.records import (
    DELIVERED, FAILED, RECEIVER_FAILING, RECEIVER_RECOVERED, RETRYING, SKIPPED, Notification, dumps, iso_utc, loads, parse_ts,
)
from pipeline.registry import Registry

log = logging.getLogger("huxue.notifier")


def secret_of(cfg: Config, r: ReceiverConfig, env: dict[str, str] | None = None) -> str:
    """The receiver's signing secret ('' when none); RuntimeError (one line) when unreadable."""
    env = os.environ if env is None else env
    if r.secret:
        return r.secret
    if r.secret_env:
        value = env.get(r.secret_env, "")
        if not value:
            raise RuntimeError(f"notify receiver {r.name}: the variable {r.secret_env} (its secret_env) is not set or empty")
        return value
    if r.secret_file:
        path = (Path(cfg.base_dir) / r.secret_file).resolve()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise RuntimeError(f"notify receiver {r.name}: cannot read secret_file {path}: {exc.strerror}") from None
        if not value:
            raise RuntimeError(f"notify receiver {r.name}: secret_file {path} is empty")
        return value
    return ""


def delivered_so_far(cfg: Config, timeout: float = 60) -> set[tuple[str, str]]:
    """(identifier, receiver) of every `delivered` record on the notifications topic."""
    topic = cfg.topics.notifications
    consumer = kafka_client.consumer(cfg, "notifier", group_id=None, enable_auto_commit=False)
    done: set[tuple[str, str]] = set()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not parts:
            return done
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = {tp: n for tp, n in consumer.end_offsets(parts).items() if n}
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < n for tp, n in ends.items()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {topic} to its end within {timeout:g} s")
            for rs in consumer.poll(timeout_ms=200).values():
                for r in rs:
                    try:
                        rec = loads(r.value)
                    except ValueError:
                        continue
                    if isinstance(rec, dict) and rec.get("outcome") == DELIVERED:
                        done.add((str(rec.get("identifier")), str(rec.get("receiver"))))
    finally:
        consumer.close()
    return done


class Notifier:
    def __init__(self, cfg: Config, registry: Registry | None = None):
        self.cfg, self.n, self.registry = cfg, cfg.notify, registry
        self.topics = cfg.topics
        self.receivers = {r.name: r for r in self.n.receivers}
        self.secrets = {r.name: secret_of(cfg, r) for r in self.n.receivers}
        self.health = {name: policy.ReceiverHealth(self.n.failing_after, self.n.failing_seconds) for name in self.receivers}
        self.failing_at: dict[str, set[str]] = {name: set() for name in self.receivers}  # schools told a receiver is failing
        self.delivered: set[tuple[str, str]] = set()
        self.delivering: set[tuple[str, str]] = set()
        self.loop = asyncio.new_event_loop()
        self.session: aiohttp.ClientSession | None = None
        self.producer: Any = None

    # -- the process --------------------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        t = self.topics
        kafka_client.ensure_topics(self.cfg, "notifier", [t.alerts, t.notifications], self.cfg.kafka.partitions, self.cfg.kafka.replication_factor)
        if not self.n.routes:
            log.warning("no notify.routes configured: alerts are recorded as skipped, nobody is paged")
        self.producer = kafka_client.producer(self.cfg, "notifier")
        self.producer.partitions_for(t.notifications)  # metadata now, so send() never blocks the loop
        self.delivered = delivered_so_far(self.cfg)
        log.info("notifications read", extra={"delivered": len(self.delivered)})
        metrics.serve(self.n.metrics_port, self.n.metrics_bind)
        loop_thread = threading.Thread(target=self.loop.run_forever, name="notifier-http", daemon=True)
        loop_thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result(10)
        consumer = kafka_client.consumer(
            self.cfg, "notifier", group_id=self.n.group_id, enable_auto_commit=False,
            # a new group starts at the beginning; alerts older than max_age_seconds are skipped
            auto_offset_reset="earliest", client_id=self.cfg.notifier_instance_id,
            group_instance_id=self.cfg.notifier_instance_id, session_timeout_ms=int(self.n.session_timeout_seconds * 1000),
            heartbeat_interval_ms=max(100, int(self.n.session_timeout_seconds * 1000 / 3)),
        )
        pending: dict[TopicPartition, collections.deque] = collections.defaultdict(collections.deque)
        ready = threading.Event()
        consumer.subscribe([t.alerts], listener=_Listener(self, consumer, pending, ready))
        said_ready = False
        try:
            while not stop.is_set():
                self._poll(consumer, pending)
                if ready.is_set() and not said_ready:
                    said_ready = True
                    log.info("notifier ready", extra={"group": self.n.group_id, "receivers": len(self.receivers)})
            self._drain(consumer, pending)
        finally:
            consumer.close(autocommit=False)
            self.producer.flush(10)
            self.producer.close(5)
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            loop_thread.join(5)
        log.info("notifier stopped")
        return 0

    def _poll(self, consumer: Any, pending: dict[TopicPartition, collections.deque]) -> None:
        in_flight = sum(len(q) for q in pending.values())
        metrics.NOTIFIER_INFLIGHT.set(in_flight)
        room = self.n.max_in_flight - in_flight
        if room <= 0:
            consumer.pause(*consumer.assignment())
        elif consumer.paused():
            consumer.resume(*consumer.paused())
        batch = consumer.poll(timeout_ms=100, max_records=max(1, room))
        for tp, records in batch.items():
            for r in records:
                pending[tp].append((r.offset, asyncio.run_coroutine_threadsafe(self.handle(r.value), self.loop)))
        self._commit(consumer, pending, wait=False)

    def _commit(self, consumer: Any, pending: dict[TopicPartition, collections.deque], only: Any = None, wait: bool = True) -> None:
        offsets = {}
        for tp, q in pending.items():
            if only is not None and tp not in only:
                continue
            last = None
            while q and q[0][1].done() and not q[0][1].cancelled() and q[0][1].exception() is None:
                last = q.popleft()[0]
            if last is not None:
                offsets[tp] = OffsetAndMetadata(last + 1, "", -1)
        if offsets:
            try:
                if wait:
                    consumer.commit(offsets)
                else:  # the polling loop: a commit round trip must not delay the next alerts
                    consumer.commit_async(offsets, callback=_commit_failed)
            except Exception as exc:  # noqa: BLE001 - rebalanced away: the new owner re-reads them
                log.warning("commit failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    def _drain(self, consumer: Any, pending: dict[TopicPartition, collections.deque]) -> None:
        """On stop: let deliveries under way finish for a while, commit what finished, cancel
        the rest (not committed: paged after the restart, de-duplicated by the topic)."""
        grace = min(10.0, self.cfg.stack.stop_timeout_seconds / 3)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(not f.done() for q in pending.values() for _, f in q):
            time.sleep(0.05)
        self._commit(consumer, pending)
        left = [f for q in pending.values() for _, f in q if not f.done()]
        for f in left:
            f.cancel()
        if left:
            log.info("stopping with deliveries unfinished; they are paged after a restart", extra={"alerts": len(left)})

    async def _open(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

    async def _close(self) -> None:
        if self.session is not None:
            await self.session.close()

    # -- one alert ------------------------------------------------------------------------
    async def handle(self, value: bytes) -> None:
        try:
            alert = loads(value)
            if not isinstance(alert, dict) or not alert.get("identifier"):
                raise ValueError("not an alert")
        except ValueError:
            metrics.NOTIFIER_SKIPPED.labels("invalid").inc()
            await self.publish({"identifier": "", "school_id": "", "receiver": "", "outcome": SKIPPED, "error": "not an alert (invalid JSON or no identifier)"})
            return
        try:
            await self._handle(alert)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad alert must not stop the paging of others
            log.exception("alert could not be handled", extra={"identifier": alert.get("identifier")})
            await self.publish(self.record(alert, None, SKIPPED, error=f"internal error: {type(exc).__name__}: {exc}"[:300]))

    async def _handle(self, alert: dict[str, Any]) -> None:
        decision = routing.route(alert, self.n, self.registry)
        if not decision.receivers:
            metrics.NOTIFIER_SKIPPED.labels(decision.reason.split(":")[0]).inc()
            await self.publish(self.record(alert, None, SKIPPED, error=decision.reason))
            return
        age = time.time() - _epoch(alert.get("sent"))
        if self.n.max_age_seconds and age > self.n.max_age_seconds:
            metrics.NOTIFIER_SKIPPED.labels("too_old").inc()
            await self.publish(self.record(alert, None, SKIPPED, error=f"too_old: sent {age:.0f} s ago (notify.max_age_seconds {self.n.max_age_seconds:g})"))
            return
        await asyncio.gather(*(self.deliver(alert, self.receivers[name]) for name in decision.receivers))

    async def deliver(self, alert: dict[str, Any], receiver: ReceiverConfig) -> None:
        key = (str(alert["identifier"]), receiver.name)
        if key in self.delivered or key in self.delivering:
            metrics.NOTIFIER_SKIPPED.labels("already_delivered").inc()
            await self.publish(self.record(alert, receiver, SKIPPED, error="already delivered" if key in self.delivered else "being delivered"))
            return
        self.delivering.add(key)
        try:
            await self._deliver(alert, receiver, key)
        finally:
            self.delivering.discard(key)

    async def _deliver(self, alert: dict[str, Any], receiver: ReceiverConfig, key: tuple[str, str]) -> None:
        n, health = self.n, self.health[receiver.name]
        school = self.registry.school(str(alert.get("school_id", ""))) if self.registry else None
        started, attempt, acks = time.monotonic(), 0, []
        while True:
            attempt += 1
            if receiver.type == "email":
                verdict, status, retry_after = await self._mail(receiver, alert, school)
            else:
                verdict, status, retry_after = await self._post(receiver, alert, school)
            now = time.time()
            if verdict.delivered:
                self.delivered.add(key)
                latency = now - _epoch(alert.get("sent"), now)
                metrics.NOTIFIER_ATTEMPTS.labels(receiver.name, DELIVERED).inc()
                metrics.NOTIFIER_LATENCY.labels(receiver.name).observe(max(0.0, latency))
                acks.append(self.publish(self.record(alert, receiver, DELIVERED, attempt, status, latency_ms=round(latency * 1000))))
                log.info("paged", extra={"receiver": receiver.name, "identifier": key[0], "attempt": attempt, "latency_ms": round(latency * 1000)})
                if health.delivered():
                    metrics.NOTIFIER_FAILING.labels(receiver.name).set(0)
                    log.info("paging recovered", extra={"receiver": receiver.name})
                schools, self.failing_at[receiver.name] = self.failing_at[receiver.name], set()
                for school_id in sorted(schools):  # each school told it was failing learns it works
                    rec = self.record(alert, receiver, RECEIVER_RECOVERED, error=f"paging to {receiver.name} works again")
                    if school_id != rec["school_id"]:  # not this alert's school: not its incident either
                        rec = {**rec, "identifier": "", "incident_id": "", "school_id": school_id, "rule": ""}
                    acks.append(self.publish(rec))
                break
            delay = policy.backoff(attempt, n.retry_initial_seconds, n.retry_cap_seconds, retry_after, jitter=0.1)
            give_up = not verdict.retry or time.monotonic() - started + delay > n.retry_max_seconds
            outcome = FAILED if give_up else RETRYING
            metrics.NOTIFIER_ATTEMPTS.labels(receiver.name, outcome).inc()
            acks.append(self.publish(self.record(alert, receiver, outcome, attempt, status, error=verdict.error)))
            newly_failing = health.delivery_failed(time.monotonic()) if give_up else health.attempt_failed(time.monotonic())
            why = health.why(time.monotonic())
            if newly_failing:
                metrics.NOTIFIER_FAILING.labels(receiver.name).set(1)
                log.error("paging failing", extra={"receiver": receiver.name, "why": why, "error": verdict.error})
            school_id = str(alert.get("school_id", ""))
            if health.failing and school_id not in self.failing_at[receiver.name]:
                self.failing_at[receiver.name].add(school_id)
                acks.append(self.publish(self.record(alert, receiver, RECEIVER_FAILING, error=f"paging to {receiver.name} failing: {why}; last: {verdict.error}")))
            if give_up:
                log.warning("page failed", extra={"receiver": receiver.name, "identifier": key[0], "attempts": attempt, "error": verdict.error})
                break
            await asyncio.sleep(delay)
        await asyncio.gather(*acks)

    async def _post(self, receiver: ReceiverConfig, alert: dict[str, Any], school: Any) -> tuple[policy.Verdict, int | None, float | None]:
        req = messages.build(receiver, self.secrets[receiver.name], alert, school, int(time.time() * 1000))
        status, retry_after = None, None
        try:
            # a signed DingTalk URL is encoded already (encoding it again breaks the sign)
            url = yarl.URL(req.url, encoded=receiver.type == "dingtalk")
            async with self.session.post(url, data=req.body, headers=req.headers, timeout=aiohttp.ClientTimeout(total=self.n.timeout_seconds)) as resp:
                status = resp.status
                raw = await resp.read()
                retry_after = policy.retry_after_seconds(resp.headers.get("Retry-After"))
            try:
                answer = loads(raw) if raw else None
            except ValueError:
                answer = None
            return policy.judge(receiver.type, status, answer), status, retry_after
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as exc:
            return policy.Verdict(False, True, (f"{type(exc).__name__}: {exc}".rstrip(": ") or "timeout")[:300]), status, None

    async def _mail(self, receiver: ReceiverConfig, alert: dict[str, Any], school: Any) -> tuple[policy.Verdict, int | None, float | None]:
        msg = messages.email_message(receiver, alert, school)
        try:
            # smtplib blocks: one thread of the default executor per mail being sent
            await self.loop.run_in_executor(None, send_mail, receiver, self.secrets[receiver.name], msg, self.n.timeout_seconds)
            return policy.DELIVERED, None, None
        except Exception as exc:  # noqa: BLE001 - every failure is judged (retry or final)
            return policy.smtp_verdict(exc), getattr(exc, "smtp_code", None), None

    # -- the notifications topic -------------------------------------------------------
    def record(
        self, alert: dict[str, Any], receiver: ReceiverConfig | None, outcome: str, attempt: int = 0,
        http_status: int | None = None, error: str = "", latency_ms: int | None = None,
    ) -> dict[str, Any]:
        return Notification(
            identifier=str(alert.get("identifier", "")),
            incident_id=str(alert.get("incident_id", "")),
            school_id=str(alert.get("school_id", "")),
            receiver=receiver.name if receiver else "",
            type=receiver.type if receiver else "",
            attempt=attempt,
            outcome=outcome,
            at=iso_utc(time.time()),
            rule=str(alert.get("rule", "")),
            http_status=http_status,
            error=error,
            latency_ms=latency_ms,
        ).to_dict()

    async def publish(self, rec: dict[str, Any]) -> None:
        """Until Kafka acknowledged it (retried: the alert's offset waits for it)."""
        while True:
            done: asyncio.Future = self.loop.create_future()

            def settle(value: Any, ok: bool) -> None:
                if done.done():
                    return
                if ok:
                    done.set_result(None)
                else:
                    done.set_exception(value if isinstance(value, BaseException) else RuntimeError(str(value)))

            try:
                future = self.producer.send(self.topics.notifications, key=rec["school_id"] or None, value=dumps(rec))
                future.add_callback(lambda md: self.loop.call_soon_threadsafe(settle, md, True))
                future.add_errback(lambda exc: self.loop.call_soon_threadsafe(settle, exc, False))
                await done
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka unavailable: keep the record, try again
                log.warning("notification record not written, retrying", extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
                await asyncio.sleep(1)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, notifier: Notifier, consumer: Any, pending: dict, ready: threading.Event):
        self.notifier, self.consumer, self.pending, self.ready = notifier, consumer, pending, ready

    def on_partitions_revoked(self, revoked):
        # Commit what finished; deliveries still under way go on, but their alerts are
        # re-read by the partitions' next owner (de-duplicated only after a restart there).
        self.notifier._commit(self.consumer, self.pending, only=set(revoked))
        for tp in revoked:
            self.pending.pop(tp, None)

    def on_partitions_assigned(self, assigned):
        self.ready.set()


def send_mail(receiver: ReceiverConfig, password: str, msg: Any, timeout: float) -> None:
    """Send one mail (blocking): smtps:// implicit TLS, smtp:// with STARTTLS unless
    `starttls: false` (a local relay); AUTH with username and the receiver's secret."""
    import smtplib
    import ssl
    from urllib.parse import urlsplit

    url = urlsplit(receiver.url)
    context = ssl.create_default_context()
    if url.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(url.hostname, url.port or 465, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(url.hostname, url.port or 587, timeout=timeout)
    with client:
        client.ehlo()
        if url.scheme == "smtp" and receiver.starttls:
            client.starttls(context=context)  # SMTPNotSupportedError when the server offers none: final
            client.ehlo()
        if receiver.username:
            client.login(receiver.username, password)
        client.send_message(msg)


def _commit_failed(offsets: Any, result: Any) -> None:
    if isinstance(result, Exception):  # the next commit (or the drain's) covers these offsets
        log.debug("async commit failed", extra={"error": f"{type(result).__name__}: {result}"})


def _epoch(value: Any, default: float | None = None) -> float:
    try:
        return parse_ts(value)
    except ValueError:
        return time.time() if default is None else default


def check_people(cfg: Config, registry: Registry) -> None:
    """The registry's per-school `notify:` names receivers the config defines (one line if not)."""
    names = {r.name for r in cfg.notify.receivers}
    for school in registry.schools.values():
        for role, receivers in school.notify.items():
            unknown = [r for r in receivers if r not in names]
            if unknown:
                raise RuntimeError(
                    f"registry: school {school.id} notify.{role} names unknown receiver(s) {', '.join(unknown)}; "
                    f"notify.receivers defines: {', '.join(sorted(names)) or 'none'}"
                )


def run(cfg: Config, registry: Registry | None, stop: threading.Event) -> int:
    if registry is not None:
        check_people(cfg, registry)
    return Notifier(cfg, registry).run(stop)
