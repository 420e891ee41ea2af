-- Is the default branch getting slower?
--
-- Per pipeline and day (UTC), over builds on the pipeline's default branch that finished in
-- the window [since, until) with a verdict (passed or failed): builds, failures, p50 and p95 duration.
-- `make report` draws one chart per pipeline from these rows.
WITH builds AS (
  SELECT
    pipeline_slug,
    DATE(finished_at) AS day,
    outcome,
    duration_seconds
  FROM `${project}.${bigquery_dataset}.builds_latest`
  WHERE finished_at >= @since AND finished_at < @until
    AND outcome IN ('passed', 'failed')
    AND branch = IFNULL(default_branch, 'main')  -- mcncl/buildkite-pubsub messages lack the default branch
)

SELECT
  pipeline_slug AS pipeline,
  day,
  COUNT(*) AS builds,
  COUNTIF(outcome = 'failed') AS failed,
  ANY_VALUE(p50_duration) AS p50_duration_seconds,
  ANY_VALUE(p95_duration) AS p95_duration_seconds
FROM (
  SELECT
    *,
    PERCENTILE_CONT(duration_seconds, 0.5) OVER (PARTITION BY pipeline_slug, day) AS p50_duration,
    PERCENTILE_CONT(duration_seconds, 0.95) OVER (PARTITION BY pipeline_slug, day) AS p95_duration
  FROM builds
)
GROUP BY pipeline_slug, day
ORDER BY pipeline, day
