-- builds_latest: one row per build, the last thing we were told about it. Queries read this
-- view, never the builds table: that table can hold several rows for one build, because
-- Pub/Sub delivers at least once, an insert that timed out may have landed before its retry,
-- and a build that finished blocked finishes again once someone unblocks it.
--
-- When the same build arrived from both producers, the row from our ingress wins over the one
-- from mcncl/buildkite-pubsub, which drops fields.
--
-- outcome is the verdict a person would name, defined as buildkite_events' Build.effective_state:
-- "failed" for a failed build, and for one stopped on a block step whose blocked_state is
-- failed; "blocked" for any other build waiting on a block step; else the state (passed,
-- canceled, skipped, not_run). Only passed and failed are verdicts.
SELECT
  * EXCEPT (row_rank),
  CASE
    WHEN state = 'failed' OR (blocked AND blocked_state = 'failed') THEN 'failed'
    WHEN blocked THEN 'blocked'
    ELSE state
  END AS outcome
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (
      PARTITION BY build_id
      ORDER BY finished_at DESC, IF(source_format = 'mcncl', 1, 0), inserted_at DESC, event_key
    ) AS row_rank
  FROM `${project}.${bigquery_dataset}.builds`
)
WHERE row_rank = 1
