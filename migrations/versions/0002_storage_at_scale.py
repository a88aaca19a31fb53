"""Builds still visible keep last_snapshot_id and last_seen NULL; snapshots by id

Until now every stored snapshot moved ``last_snapshot_id`` and ``last_seen``
of every build it still showed (a thousand rows on a busy tenant) to itself.
From now on they are written once, when a build leaves; while the source's
latest parsed snapshot shows a build, both are NULL and read as that
snapshot's id and time (``recorder.models.build_last_seen``).

Snapshots get an index on (source_id, id): storing a body looks up the
body stored just before and the latest full one, and without the index both
sorted every snapshot of the source, a cost that grew all year.

The upgrade moves existing rows to that form: the builds whose last snapshot
is their source's latest parsed one become NULL. The downgrade writes the
values back.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import recorder.models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written without the models, so that this migration keeps meaning what it
# says when the models change: "the latest parsed snapshot of the source".
VISIBLE_TO_NULL = """
UPDATE builds SET last_snapshot_id = NULL, last_seen = NULL
WHERE last_snapshot_id = (
    SELECT s.id FROM snapshots AS s
    WHERE s.source_id = builds.source_id AND s.parse_error IS NULL
    ORDER BY s.taken_at DESC, s.id DESC LIMIT 1
)
"""
NULL_TO_LATEST = """
UPDATE builds SET
    last_seen = (
        SELECT s.taken_at FROM snapshots AS s
        WHERE s.source_id = builds.source_id AND s.parse_error IS NULL
        ORDER BY s.taken_at DESC, s.id DESC LIMIT 1
    ),
    last_snapshot_id = (
        SELECT s.id FROM snapshots AS s
        WHERE s.source_id = builds.source_id AND s.parse_error IS NULL
        ORDER BY s.taken_at DESC, s.id DESC LIMIT 1
    )
WHERE last_snapshot_id IS NULL
"""
# A NULL left means the source has no parsed snapshot at all.
NULL_TO_FIRST = """
UPDATE builds SET last_snapshot_id = first_snapshot_id, last_seen = first_seen
WHERE last_snapshot_id IS NULL
"""


def upgrade() -> None:
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_snapshots_source_id", ["source_id", "id"], unique=False
        )
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.alter_column(
            "last_snapshot_id", existing_type=sa.Integer(), nullable=True
        )
        batch_op.alter_column(
            "last_seen", existing_type=recorder.models.UTCDateTime(), nullable=True
        )
    op.execute(VISIBLE_TO_NULL)


def downgrade() -> None:
    op.execute(NULL_TO_LATEST)
    op.execute(NULL_TO_FIRST)
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.alter_column(
            "last_seen", existing_type=recorder.models.UTCDateTime(), nullable=False
        )
        batch_op.alter_column(
            "last_snapshot_id", existing_type=sa.Integer(), nullable=False
        )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_snapshots_source_id")
