-- How long does the default branch stay red?
--
-- A failure incident starts with a failed build after a passed one (or with the first build in
-- the window) and ends with the next passed build. Builds without a verdict (canceled, skipped,
-- blocked) neither start nor end one. Per pipeline, over builds on its default branch that
-- finished in the window [since, until), in the order they finished:
--   incidents                        failure streaks that started in the window
--   recovered                        those a passed build ended in the window
--   mean_time_to_recovery_seconds    first failure finished -> next pass finished, averaged
--   longest_time_to_recovery_seconds
--   still_failing                    the last verdict in the window is a failure
-- Pipelines with no failure in the window have no row.
WITH verdicts AS (
  SELECT
    pipeline_slug,
    branch,
    number,
    outcome,
    finished_at,
    LAG(outcome) OVER (PARTITION BY pipeline_slug ORDER BY finished_at, number) AS previous_outcome
  FROM `${project}.${bigquery_dataset}.builds_latest`
  WHERE finished_at >= @since AND finished_at < @until
    AND outcome IN ('passed', 'failed')
    AND branch = IFNULL(default_branch, 'main')  -- mcncl/buildkite-pubsub messages lack the default branch
),

-- Only the builds where the verdict flipped: each failure here starts an incident, and the
-- change after it is the pass that ended it.
changes AS (
  SELECT
    pipeline_slug,
    branch,
    outcome,
    finished_at,
    LEAD(finished_at) OVER (PARTITION BY pipeline_slug ORDER BY finished_at, number) AS recovered_at
  FROM verdicts
  WHERE previous_outcome IS NULL OR outcome != previous_outcome
)

SELECT
  pipeline_slug AS pipeline,
  MAX(branch) AS branch,
  COUNT(*) AS incidents,
  COUNT(recovered_at) AS recovered,
  AVG(TIMESTAMP_DIFF(recovered_at, finished_at, MILLISECOND) / 1000) AS mean_time_to_recovery_seconds,
  MAX(TIMESTAMP_DIFF(recovered_at, finished_at, MILLISECOND) / 1000) AS longest_time_to_recovery_seconds,
  LOGICAL_OR(recovered_at IS NULL) AS still_failing
FROM changes
WHERE outcome = 'failed'
GROUP BY pipeline_slug
ORDER BY mean_time_to_recovery_seconds DESC, pipeline
