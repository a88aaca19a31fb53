"""Sources, polls, snapshots, builds and pipeline counts

Revision ID: 0001
Revises:
Create Date: 2026-12-03 17:44:03.776958
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import recorder.models

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("created_at", recorder.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
        sa.UniqueConstraint("name", name=op.f("uq_sources_name")),
    )
    op.create_table(
        "builds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("pipeline", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("project", sa.Text(), nullable=True),
        sa.Column("change", sa.Text(), nullable=True),
        sa.Column("ref", sa.Text(), nullable=True),
        sa.Column("branch", sa.Text(), nullable=True),
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("voting", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("enqueue_time", recorder.models.UTCDateTime(), nullable=True),
        sa.Column("start_time", recorder.models.UTCDateTime(), nullable=True),
        sa.Column("end_time", recorder.models.UTCDateTime(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("log_url", sa.Text(), nullable=True),
        sa.Column("uuid", sa.Text(), nullable=True),
        sa.Column("first_snapshot_id", sa.Integer(), nullable=False),
        sa.Column("last_snapshot_id", sa.Integer(), nullable=False),
        sa.Column("first_seen", recorder.models.UTCDateTime(), nullable=False),
        sa.Column("last_seen", recorder.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name=op.f("fk_builds_source_id_sources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_builds")),
        sa.UniqueConstraint("source_id", "key", name="uq_builds_source_key"),
    )
    with op.batch_alter_table("builds", schema=None) as batch_op:
        # The time range of /jobs and /api/builds, newest first.
        batch_op.create_index(
            "ix_builds_end_seen", ["end_time", "last_seen"], unique=False
        )
        # /jobs/<name>: one job's runs by time, durations read from the index.
        batch_op.create_index(
            "ix_builds_job_end",
            ["job", "end_time", "duration_s", "result"],
            unique=False,
        )
        # /changes/<change>: the builds of one change.
        batch_op.create_index(
            "ix_builds_source_change", ["source_id", "change"], unique=False
        )
        # The recorder: the builds still shown by the latest snapshot.
        batch_op.create_index(
            "ix_builds_source_last_snapshot",
            ["source_id", "last_snapshot_id"],
            unique=False,
        )

    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("taken_at", recorder.models.UTCDateTime(), nullable=False),
        sa.Column("last_taken_at", recorder.models.UTCDateTime(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("raw_size", sa.BigInteger(), nullable=False),
        sa.Column("encoding", sa.String(length=20), nullable=False),
        sa.Column("base_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("parse_error", sa.Text(), nullable=True),
        sa.Column("zuul_version", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["base_id"], ["snapshots.id"], name=op.f("fk_snapshots_base_id_snapshots")
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name=op.f("fk_snapshots_source_id_sources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        # /, /at/<time>, previous and next: a source's snapshots by time.
        batch_op.create_index(
            "ix_snapshots_source_taken", ["source_id", "taken_at"], unique=False
        )

    op.create_table(
        "pipeline_counts",
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("pipeline", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("taken_at", recorder.models.UTCDateTime(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("waiting", sa.Integer(), nullable=False),
        sa.Column("finished", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_pipeline_counts_snapshot_id_snapshots"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_pipeline_counts_source_id_sources"),
        ),
        sa.PrimaryKeyConstraint(
            "snapshot_id", "pipeline", name=op.f("pk_pipeline_counts")
        ),
    )
    with op.batch_alter_table("pipeline_counts", schema=None) as batch_op:
        # The timeline strip: a source's counts over a time range.
        batch_op.create_index(
            "ix_pipeline_counts_source_taken", ["source_id", "taken_at"], unique=False
        )

    op.create_table(
        "polls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("started_at", recorder.models.UTCDateTime(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("snapshot_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_polls_snapshot_id_snapshots"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name=op.f("fk_polls_source_id_sources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_polls")),
    )
    with op.batch_alter_table("polls", schema=None) as batch_op:
        # /healthz and the timeline's failed-poll gaps.
        batch_op.create_index(
            "ix_polls_source_started", ["source_id", "started_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("polls", schema=None) as batch_op:
        batch_op.drop_index("ix_polls_source_started")

    op.drop_table("polls")
    with op.batch_alter_table("pipeline_counts", schema=None) as batch_op:
        batch_op.drop_index("ix_pipeline_counts_source_taken")

    op.drop_table("pipeline_counts")
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_snapshots_source_taken")

    op.drop_table("snapshots")
    with op.batch_alter_table("builds", schema=None) as batch_op:
        batch_op.drop_index("ix_builds_source_last_snapshot")
        batch_op.drop_index("ix_builds_source_change")
        batch_op.drop_index("ix_builds_job_end")
        batch_op.drop_index("ix_builds_end_seen")

    op.drop_table("builds")
    op.drop_table("sources")
