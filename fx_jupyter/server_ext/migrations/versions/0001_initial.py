"""The store as fx-jupyter 0.1 created it: functions, endpoints, tasks, results, service state.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "functions",
        sa.Column("function_id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("python_version", sa.String(64)),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.UniqueConstraint("owner", "code_hash", name="uq_functions_owner_code"),
    )
    op.create_table(
        "endpoints",
        sa.Column("endpoint_id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("public_key", sa.String(40), nullable=False, unique=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("last_heartbeat", sa.Double),
        sa.Column("info", sa.Text, nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_endpoints_owner_name"),
    )
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("endpoint_id", sa.String(36), nullable=False),
        sa.Column("function_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("transitions", sa.Text, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("walltime", sa.Double),
        sa.Column("completion_t", sa.Double),
        sa.Column("memo_key", sa.String(64)),
    )
    op.create_index("ix_tasks_endpoint_status_seq", "tasks", ["endpoint_id", "status", "seq"])
    op.create_index(
        "ix_tasks_owner_memo",
        "tasks",
        ["owner", "memo_key"],
        sqlite_where=sa.text("memo_key IS NOT NULL"),
        postgresql_where=sa.text("memo_key IS NOT NULL"),
    )
    op.create_table(
        "results",
        sa.Column("task_id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary),
        sa.Column("exception_text", sa.Text),
        sa.Column("stdout", sa.Text),
        sa.Column("stderr", sa.Text),
        sa.Column("created", sa.Double, nullable=False),
    )
    op.create_table(
        "service_state",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("service_state", "results", "tasks", "endpoints", "functions"):
        op.drop_table(table)
