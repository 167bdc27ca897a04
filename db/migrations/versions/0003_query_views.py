"""Views for the questions users ask the results database most (docs/results-database.md).

`training_runs`: one row per training run with its key metrics, and what its loss is measured per: a
`train` run's best_val_loss is per image-text pair (contrastive), a `train-full` run's per generated token,
so the two are never compared. `best_runs`: the lowest best_val_loss per stage and PEFT method among the
runs that succeeded.

A later migration that rebuilds `experiments` in SQLite's batch mode (copy, drop, rename) must drop these
views first and create them again: SQLite checks the views when the copy is renamed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRAINING_RUNS = """
CREATE VIEW training_runs AS
SELECT
    e.id AS experiment_id,
    e.job_id,
    e.stage,
    e.peft_method,
    e.seed,
    e.status,
    e.dataset,
    e.best_val_loss,
    CASE e.stage WHEN 'train' THEN 'per image-text pair' ELSE 'per token' END AS loss_unit,
    e.train_time_s,
    e.samples_per_s,
    e.peak_gpu_mem_mb,
    e.peak_ram_mb,
    e.trainable_params,
    e.checkpoint_path,
    e.created_at
FROM experiments e
WHERE e.stage IN ('train', 'train-full')
"""

BEST_RUNS = """
CREATE VIEW best_runs AS
SELECT t.*
FROM training_runs t
WHERE t.status = 'succeeded'
  AND t.best_val_loss = (
    SELECT MIN(u.best_val_loss) FROM training_runs u
    WHERE u.status = 'succeeded' AND u.stage = t.stage AND u.peft_method = t.peft_method
  )
"""


def upgrade() -> None:
    op.execute(TRAINING_RUNS)
    op.execute(BEST_RUNS)


def downgrade() -> None:
    op.execute("DROP VIEW best_runs")
    op.execute("DROP VIEW training_runs")
