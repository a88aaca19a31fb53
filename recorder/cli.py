"""The ``zuul-status`` command line."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from recorder.settings import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)


class Context:
    """Settings loaded once per invocation, on first use."""

    def __init__(self, config: str | None):
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except ConfigError as error:
                raise click.ClickException(str(error)) from None
        return self._settings


pass_context = click.make_pass_decorator(Context)


class ZuulStatusGroup(click.Group):
    """Turns the errors a user can cause into one clear line, not a traceback."""

    def invoke(self, ctx: click.Context):
        from alembic.util.exc import CommandError
        from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

        from recorder.leader import SourceBusy

        try:
            return super().invoke(ctx)
        except (ConfigError, CommandError, SourceBusy) as error:
            raise click.ClickException(str(error)) from None
        except DBAPIError as error:
            # The driver's own words, without SQLAlchemy's statement and link.
            reason = str(error.orig).strip().splitlines() or [type(error).__name__]
            raise click.ClickException(f"database unusable: {reason[0]}") from None
        except (ArgumentError, NoSuchModuleError, ModuleNotFoundError) as error:
            raise click.ClickException(f"unusable database URL: {error}") from None
        except OSError as error:
            where = f": {error.filename}" if error.filename else ""
            raise click.ClickException(f"{error.strerror or error}{where}") from None


PORT = click.IntRange(0, 65535)


@click.group(
    cls=ZuulStatusGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False),
    help="TOML configuration file [default: $ZUUL_STATUS_CONFIG or ./zuul-status.toml]",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.pass_context
def main(ctx: click.Context, config: str | None, log_level: str) -> None:
    """Record Zuul status snapshots and browse their history."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Alembic announces each plugin it sets up at INFO: noise for our users.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    ctx.obj = Context(config)


@main.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_context
def db_upgrade(context: Context, revision: str) -> None:
    """Apply migrations to the configured database."""
    from recorder.migrate import upgrade

    upgrade(context.settings.database_url, revision)
    click.echo(f"database at revision {revision}")


@db.command("downgrade")
@click.argument("revision")
@pass_context
def db_downgrade(context: Context, revision: str) -> None:
    """Revert migrations down to REVISION (``base`` for an empty schema)."""
    from recorder.migrate import downgrade

    downgrade(context.settings.database_url, revision)
    click.echo(f"database at revision {revision}")


@main.command()
@click.option("--once", is_flag=True, help="Poll each source once and exit.")
@pass_context
def record(context: Context, once: bool) -> None:
    """Poll every configured source on its interval and store each poll."""
    from recorder.service import Recorder

    settings = context.settings
    if not settings.sources:
        raise click.ClickException(
            "no sources configured: add [[sources]] to the configuration "
            "or set ZUUL_STATUS_URL"
        )
    _require_schema(settings.database_url)
    recorder = Recorder(settings)
    if once:
        sys.exit(0 if recorder.poll_all_once() else 1)
    recorder.run()


def _require_schema(database_url: str) -> None:
    """Refuse to go on unless the database exists and is fully migrated.

    A missing SQLite file is not created: a typo in the path must not leave
    an empty database behind.
    """
    from sqlalchemy.engine import make_url

    from recorder.db import normalise_url
    from recorder.migrate import is_current

    url = make_url(normalise_url(database_url))
    database = url.database or ""
    if (
        url.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not Path(database).exists()
    ):
        raise click.ClickException(
            f"no database at {database}: run `zuul-status db upgrade` to create it"
        )
    if not is_current(database_url):
        raise click.ClickException(
            "the database schema is missing or old: run `zuul-status db upgrade`"
        )


@main.command("import")
@click.option(
    "--source", "source_name", required=True, help="Source name to store under."
)
@click.option(
    "--taken-at",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    help="When the bodies were taken (UTC if no offset) [default: each file's mtime]",
)
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False)
)
@pass_context
def import_(
    context: Context, source_name: str, taken_at: datetime | None, files
) -> None:
    """Store saved status bodies as snapshots of SOURCE.

    Bodies may be imported in any order: one older than the newest stored
    snapshot is fitted into the history where its time falls, and the
    derived rows of SOURCE are then rebuilt.
    """
    from recorder.bulk import format_time, import_files, time_problem
    from recorder.settings import check_source_name

    check_source_name(source_name, "--source")
    if taken_at is not None:
        if len(files) > 1:
            raise click.UsageError(
                f"--taken-at gives one time, but {len(files)} FILEs were given: "
                "import one FILE at a time with it, or drop it to use each "
                "file's modification time"
            )
        if taken_at.tzinfo is None:
            taken_at = taken_at.replace(tzinfo=UTC)
        problem = time_problem(taken_at)
        if problem is not None:
            raise click.BadParameter(
                f"{format_time(taken_at)} is {problem}", param_hint="'--taken-at'"
            )

    _require_schema(context.settings.database_url)
    summary = import_files(
        context.settings, source_name, [Path(f) for f in files], taken_at
    )
    click.echo(summary.line())
    if summary.rebuilt is not None:
        click.echo(summary.rebuilt_line())
    for name, reason in summary.unparsed:
        click.echo(f"  kept unparsed: {name}: {reason}", err=True)
    for name, reason in summary.failures:
        click.echo(f"  failed: {name}: {reason}", err=True)
    if summary.failures or summary.unparsed:
        sys.exit(1)


@main.command()
@click.option("--source", "source_name", help="Only this source [default: all].")
@pass_context
def reindex(context: Context, source_name: str | None) -> None:
    """Rebuild every derived row from the stored bodies."""
    from recorder.bulk import reindex as run_reindex

    _require_schema(context.settings.database_url)
    click.echo(run_reindex(context.settings, source_name))


@main.command()
@click.option(
    "--dry-run", is_flag=True, help="Say what would be removed; remove nothing."
)
@click.option("--vacuum", is_flag=True, help="VACUUM a SQLite database afterwards.")
@pass_context
def prune(context: Context, dry_run: bool, vacuum: bool) -> None:
    """Apply the retention policy of the configuration."""
    from recorder.db import make_engine, make_sessionmaker, session_scope
    from recorder.retention import prune as run_prune
    from recorder.retention import vacuum as run_vacuum

    settings = context.settings
    _require_schema(settings.database_url)
    engine = make_engine(settings.database_url, writer=True)
    before = _database_size(engine)
    with session_scope(make_sessionmaker(engine)) as session:
        report = run_prune(session, settings.retention, dry_run=dry_run)
    click.echo(report.line(dry_run))
    if vacuum and not dry_run and run_vacuum(engine):
        click.echo(
            f"vacuumed: file {before / 1e6:.1f} MB -> "
            f"{_database_size(engine) / 1e6:.1f} MB"
        )


@main.command("export-csv")
@click.option("--source", help="Only this source.")
@click.option("--pipeline", help="Only this pipeline.")
@click.option("--project", help="Only this project.")
@click.option("--branch", help="Only this branch.")
@click.option("--job", help="Only this job.")
@click.option("--result", help="Only this result, such as SUCCESS or FAILURE.")
@click.option(
    "--range",
    "range_name",
    type=click.Choice(["day", "week", "month", "all"]),
    help="Up to the newest snapshot; not with --from or --to "
    "[default: week, unless --from or --to]",
)
@click.option(
    "--from",
    "since",
    help="From this ISO 8601 date or time; UTC unless it has an offset.",
)
@click.option(
    "--to",
    "until",
    help="Until this date (included) or time; UTC unless it has an offset.",
)
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False))
@pass_context
def export_csv(context: Context, output: str, **filters) -> None:
    """Write build timings as CSV, as /export/builds.csv does with the same filters.

    A --from or --to without an offset (2026-05-31, 2026-05-31T12:00) is in
    UTC: the command line has no reader's time zone, where the web reads
    such times in the zone its pages show. Write 2026-05-31T12:00+02:00 for
    another zone.
    """
    from recorder import export

    args = {name: value for name, value in filters.items() if value is not None}
    args |= {"range": filters["range_name"], "from": filters["since"]}
    args |= {"to": filters["until"]}
    try:
        parsed = export.parse_filters(args)
    except export.RangeConflict:
        raise click.UsageError(
            "give either --range or --from/--to, not both: each would choose "
            "the builds on its own"
        ) from None
    except export.FilterError as error:
        raise click.ClickException(str(error)) from None
    try:
        _require_schema(context.settings.database_url)
        with click.open_file(output, "wb") as stream:
            rows = export.export_csv(context.settings.database_url, parsed, stream)
    except export.FilterError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{rows} builds written to {output}", err=True)


def _database_size(engine) -> int:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    return Path(database).stat().st_size if database and Path(database).exists() else 0


@main.command("fake-upstream")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, type=PORT, help="TCP port [default: any free one]")
@click.option("--tenant", default="demo", show_default=True)
@click.option(
    "--speed",
    default=1.0,
    type=float,
    show_default=True,
    help="How much faster than real time a single body evolves.",
)
def fake_upstream(path: Path, host: str, port: int, tenant: str, speed: float) -> None:
    """Serve saved bodies (a directory, in order) or one evolving body (a file)."""
    from recorder.fake_upstream import make_server, serve_until_signal

    if path.is_dir() and not any(path.glob("*.json")):
        raise click.ClickException(f"{path}: a directory without *.json files")
    try:
        server = make_server(path, host=host, port=port, tenant=tenant, speed=speed)
    except ValueError as error:  # orjson's decode error is a ValueError
        raise click.ClickException(f"{path}: not a JSON status body: {error}") from None
    click.echo(f"serving {path} at {server.url}", err=True)
    serve_until_signal(server)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, type=PORT, show_default=True)
@pass_context
def web(context: Context, host: str, port: int) -> None:
    """Serve the web UI with Flask's development server (production: uWSGI)."""
    from webui import create_app

    _require_schema(context.settings.database_url)
    create_app(context.settings).run(host=host, port=port, threaded=True)


@main.command()
@click.option(
    "--port",
    default=8080,
    type=PORT,
    show_default=True,
    help="Web UI port (the next free one is used if it is taken).",
)
@click.option(
    "--dir",
    "directory",
    default="var/demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
def demo(port: int, directory: Path) -> None:
    """Run a fake upstream, the recorder and the web UI on SQLite."""
    from recorder.demo import run_demo

    sys.exit(run_demo(directory, port))
