"""The recorder: poll every source on its schedule and store what comes back."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from recorder.db import make_engine, make_sessionmaker, session_scope
from recorder.fetch import FetchResult, fetch
from recorder.leader import Leadership
from recorder.settings import Settings, SourceSettings
from recorder.store import BuildCache, get_or_create_source, store_poll

log = logging.getLogger(__name__)
RETRY_AFTER_SLACK_S = 0.05


class Recorder:
    """Polls sources and stores each poll in one transaction."""

    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session] | None = None
    ):
        self.settings = settings
        if sessions is None:
            sessions = make_sessionmaker(
                make_engine(settings.database_url, writer=True)
            )
        self.sessions = sessions
        # Several recorders may share the database: each source is polled only
        # by the one holding its lock (recorder/leader.py).
        self.leadership = Leadership(settings.database_url)
        self.stopping = threading.Event()
        self.caches = {source.name: BuildCache() for source in settings.sources}
        # Monotonic time before which a source is not polled (429 Retry-After).
        self.not_before: dict[str, float] = {}

    def poll(self, source: SourceSettings) -> str:
        """Fetch, check, parse and store one poll of ``source``; return its outcome."""
        if not self._may_poll(source):
            return "skipped"

        result = fetch(
            source.url,
            connect_timeout_s=source.connect_timeout_s,
            deadline_s=source.deadline_s,
            max_bytes=source.max_bytes,
            cancel=self.stopping,
        )
        if self.stopping.is_set():
            log.info("poll %s abandoned: the recorder is stopping", source.name)
            return "abandoned"
        if result.retry_after_s:
            # Counted from when the answer came, which was a moment ago: a
            # scheduled poll that falls within that moment of the end may run.
            wait_s = result.retry_after_s - RETRY_AFTER_SLACK_S
            self.not_before[source.name] = time.monotonic() + wait_s

        outcome, error = self._store_with_retry(source, result)
        size = len(result.body) if result.body is not None else 0
        if outcome in ("stored", "unchanged"):
            log.info(
                "poll %s %s: HTTP %s, %d bytes, %d ms",
                source.name, outcome, result.http_status, size, result.duration_ms,
            )  # fmt: skip
        else:
            log.warning(
                "poll %s %s: %s (%d ms)",
                source.name, outcome, error, result.duration_ms,
            )  # fmt: skip
        return outcome

    def _may_poll(self, source: SourceSettings) -> bool:
        """Whether this recorder should poll ``source`` now."""
        wait_s = self.not_before.get(source.name, 0) - time.monotonic()
        if wait_s > 0:
            log.info(
                "poll %s skipped: upstream asked to wait %.0f s", source.name, wait_s
            )
            return False
        try:
            holds = self.leadership.holds(source.name)
        except SQLAlchemyError as error:
            log.warning("poll %s skipped: cannot take its lock: %s", source.name, error)
            return False
        if not holds:
            log.debug("poll %s skipped: another recorder holds its lock", source.name)
        return holds

    def _store_with_retry(
        self, source: SourceSettings, result: FetchResult
    ) -> tuple[str, str | None]:
        """Store the poll, retrying with backoff while the database is away.

        The fetched body is kept meanwhile, so a database that comes back
        within most of an interval loses nothing.
        """
        deadline = time.monotonic() + min(source.interval_s * 0.8, 120)
        delay_s = 0.25
        while True:
            try:
                return self.store(source, result)
            except (OperationalError, InterfaceError) as error:
                reason = str(error.orig or error).strip().splitlines()[0]
                if time.monotonic() + delay_s > deadline or self.stopping.is_set():
                    log.error(
                        "poll %s lost: database unavailable: %s", source.name, reason
                    )
                    return "error", f"database unavailable: {reason}"
                log.warning(
                    "poll %s: database unavailable (%s), retrying in %.2f s",
                    source.name, reason, delay_s,
                )  # fmt: skip
                self.stopping.wait(delay_s)
                delay_s = min(delay_s * 2, 8.0)
            except Exception as error:
                log.exception("poll %s: could not store the poll", source.name)
                reason = f"could not store: {type(error).__name__}: {error}"[:2000]
                self._record_failure(source, result, reason)
                return "error", reason

    def _record_failure(
        self, source: SourceSettings, result: FetchResult, reason: str
    ) -> None:
        """Keep a failed poll row when the poll itself could not be stored."""
        failed = replace(result, body=None, error=reason)
        try:
            self.store(source, failed)
        except Exception:
            log.exception("poll %s: could not record the failure either", source.name)

    def store(
        self, source: SourceSettings, result: FetchResult
    ) -> tuple[str, str | None]:
        """Store one fetch result in one transaction."""
        with session_scope(self.sessions) as session:
            row = get_or_create_source(session, source.name, source.url)
            stored = store_poll(
                session,
                row,
                started_at=result.started_at,
                duration_ms=result.duration_ms,
                body=result.body,
                http_status=result.http_status,
                error=result.error,
                web_root=source.zuul_web_root,
                cache=self.caches[source.name],
            )
        return stored.outcome, stored.error

    def poll_all_once(self) -> bool:
        """Poll every source once, one after another; True if all were stored."""
        try:
            outcomes = [self.poll(source) for source in self.settings.sources]
        finally:
            self.leadership.release_all()
        return all(outcome in ("stored", "unchanged") for outcome in outcomes)

    def run(self) -> None:
        """Poll every source on its interval until SIGTERM or SIGINT."""
        scheduler = self.scheduler()
        stop = self._stopper(scheduler)
        previous = {
            sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        log.info("recording %d source(s)", len(self.settings.sources))
        try:
            scheduler.start()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.leadership.release_all()
            log.info("recorder stopped")

    def scheduler(self) -> BlockingScheduler:
        """A scheduler with one job per source, declared here with stable ids."""
        workers = max(2, len(self.settings.sources))
        scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(workers)}, timezone=UTC
        )
        now = datetime.now(UTC)
        for source in self.settings.sources:
            scheduler.add_job(
                self.poll,
                IntervalTrigger(seconds=source.interval_s, timezone=UTC),
                args=[source],
                id=f"poll:{source.name}",
                name=f"poll {source.name}",
                next_run_time=now + timedelta(milliseconds=10),
                # A poll never overlaps itself, a late scheduler does not fire
                # a burst of catch-up polls, and one up to half an interval
                # late still runs.
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(source.interval_s / 2)),
            )
        return scheduler

    def _stopper(self, scheduler: BlockingScheduler):
        def stop(signum, _frame):
            log.info("signal %s received, stopping", signal.Signals(signum).name)
            self.stopping.set()
            # Called from the main thread (signal handlers run there); running
            # polls are bounded by their deadline and are not waited for.
            scheduler.shutdown(wait=False)

        return stop
