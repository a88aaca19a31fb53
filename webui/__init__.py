"""The web UI: browse recorded snapshots, read from the database only."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, Response, abort, jsonify, render_template, request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import (
    HTTPException,
    InternalServerError,
    ServiceUnavailable,
)
from werkzeug.routing import IntegerConverter

from recorder.db import dispose_after_fork, make_engine, make_sessionmaker
from recorder.settings import Settings, load_settings

log = logging.getLogger(__name__)

# Every page is served with this policy: no inline script or style, nothing
# from another origin.
CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'"


@dataclass(frozen=True, slots=True)
class WebState:
    """What the views need from the application: settings and sessions."""

    settings: Settings
    sessions: sessionmaker[Session]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the web application from settings (read once if not given)."""
    settings = settings if settings is not None else load_settings()
    engine = make_engine(settings.database_url)
    # A pool must never be shared across fork(). uwsgi.ini loads the app in
    # each worker (lazy-apps), which is what guards production; this covers
    # servers that fork with Python's own fork hooks.
    dispose_after_fork(engine)

    app = Flask(__name__)
    app.url_map.converters["int"] = DatabaseIdConverter
    app.extensions["zuul_status"] = WebState(settings, make_sessionmaker(engine))
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    app.register_error_handler(HTTPException, handle_error)
    app.before_request(refuse_nul)
    app.after_request(add_security_headers)

    from webui import zones
    from webui.history import history
    from webui.jobs import jobs
    from webui.views import web

    zones.init_app(app)
    app.register_blueprint(web)
    app.register_blueprint(history)
    app.register_blueprint(jobs)
    return app


def handle_error(error: HTTPException) -> tuple[Response | str, int]:
    """One page for every error: JSON under /api/, HTML elsewhere; no traceback."""
    if isinstance(error, InternalServerError) and isinstance(
        error.original_exception, SQLAlchemyError
    ):
        error = ServiceUnavailable("the database cannot be read right now")
    code = error.code or 500
    message = error.description or "unexpected error"
    if request.path.startswith("/api/"):
        return jsonify(error={"status": code, "message": message}), code
    return render_template("error.html", code=code, message=message), code


class DatabaseIdConverter(IntegerConverter):
    """``<int:...>`` that fits a 64-bit database id: a larger number is no page."""

    def __init__(self, url_map, *args, **kwargs):
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(url_map, *args, **kwargs)


def refuse_nul() -> None:
    """NUL is in no name, time or filter, and PostgreSQL cannot even compare it."""
    values = (v for vs in request.args.listvalues() for v in vs)
    if "\x00" in request.path or any("\x00" in value for value in values):
        abort(400, "a request cannot contain NUL characters")


def add_security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
