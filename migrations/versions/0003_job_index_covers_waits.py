"""The job index also holds enqueue and start times: /jobs reads only the index

/jobs computes, per job, the median wait before a build starts (start minus
enqueue). With those two times outside ``ix_builds_job_end``, SQLite looked
up every build in range in the table, at random: over a week of a busy
tenant (77,000 builds) that cost more than everything else on the page.
With both in the index, the page reads the builds it needs from the index
alone, one job after another.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 22:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NARROW = ["job", "end_time", "duration_s", "result"]
WIDE = [*NARROW, "enqueue_time", "start_time"]


def upgrade() -> None:
    _replace_job_index(WIDE)


def downgrade() -> None:
    _replace_job_index(NARROW)


def _replace_job_index(columns: list[str]) -> None:
    op.drop_index("ix_builds_job_end", table_name="builds")
    op.create_index("ix_builds_job_end", "builds", columns, unique=False)
