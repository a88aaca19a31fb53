"""Migrations build exactly the models' schema, up and down, on both databases."""

from __future__ import annotations

from sqlalchemy import inspect

from recorder.db import make_engine
from recorder.migrate import check, downgrade, upgrade


def test_upgrade_to_head_then_check_reports_no_drift(empty_database_url):
    upgrade(empty_database_url)
    check(empty_database_url)


def test_downgrade_to_base_removes_every_table_and_upgrade_restores_them(
    empty_database_url,
):
    upgrade(empty_database_url)
    downgrade(empty_database_url, "base")
    engine = make_engine(empty_database_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(empty_database_url)
    check(empty_database_url)
