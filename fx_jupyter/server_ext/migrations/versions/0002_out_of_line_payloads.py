"""Large payloads out of line: the ``blobs`` table, and the columns that refer to it.

A task argument or a result too large for a row is a file of the service's blob directory
(``FxService.blob_dir``); ``tasks.payload_blob`` / ``results.data_blob`` name it, and the
``blobs`` row says whose it is and how large. The partial indexes let the garbage collection
find the blobs still referred to without scanning every task.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("blob_id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
    )
    op.add_column("tasks", sa.Column("payload_blob", sa.String(36)))
    op.add_column("results", sa.Column("data_blob", sa.String(36)))
    op.create_index(
        "ix_tasks_payload_blob",
        "tasks",
        ["payload_blob"],
        sqlite_where=sa.text("payload_blob IS NOT NULL"),
        postgresql_where=sa.text("payload_blob IS NOT NULL"),
    )
    op.create_index(
        "ix_results_data_blob",
        "results",
        ["data_blob"],
        sqlite_where=sa.text("data_blob IS NOT NULL"),
        postgresql_where=sa.text("data_blob IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_results_data_blob", table_name="results")
    op.drop_index("ix_tasks_payload_blob", table_name="tasks")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("data_blob")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("payload_blob")
    op.drop_table("blobs")
