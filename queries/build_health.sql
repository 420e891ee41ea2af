-- Which pipelines are slow or failing?
--
-- Per pipeline and branch, over builds that finished in the window [since, until):
--   builds        every finished build: passed, failed, canceled, skipped, blocked, not_run
--   passed/failed builds with a verdict
--   failure_rate  failed / (passed + failed); canceled, skipped and blocked builds have no verdict
--   duration      started -> finished, of builds with a verdict (p50, p95)
--   wait          scheduled -> started: how long the build waited for its first agent (p50, p95)
-- Percentiles are exact (PERCENTILE_CONT: linear interpolation between the two nearest values).
WITH builds AS (
  SELECT
    pipeline_slug,
    branch,
    outcome,
    IF(outcome IN ('passed', 'failed'), duration_seconds, NULL) AS duration_seconds,
    wait_seconds
  FROM `${project}.${bigquery_dataset}.builds_latest`
  WHERE finished_at >= @since AND finished_at < @until
),

with_percentiles AS (
  SELECT
    *,
    PERCENTILE_CONT(duration_seconds, 0.5) OVER (PARTITION BY pipeline_slug, branch) AS p50_duration,
    PERCENTILE_CONT(duration_seconds, 0.95) OVER (PARTITION BY pipeline_slug, branch) AS p95_duration,
    PERCENTILE_CONT(wait_seconds, 0.5) OVER (PARTITION BY pipeline_slug, branch) AS p50_wait,
    PERCENTILE_CONT(wait_seconds, 0.95) OVER (PARTITION BY pipeline_slug, branch) AS p95_wait
  FROM builds
)

SELECT
  pipeline_slug AS pipeline,
  branch,
  COUNT(*) AS builds,
  COUNTIF(outcome = 'passed') AS passed,
  COUNTIF(outcome = 'failed') AS failed,
  SAFE_DIVIDE(COUNTIF(outcome = 'failed'), COUNTIF(outcome IN ('passed', 'failed'))) AS failure_rate,
  ANY_VALUE(p50_duration) AS p50_duration_seconds,
  ANY_VALUE(p95_duration) AS p95_duration_seconds,
  ANY_VALUE(p50_wait) AS p50_wait_seconds,
  ANY_VALUE(p95_wait) AS p95_wait_seconds
FROM with_percentiles
GROUP BY pipeline_slug, branch
ORDER BY pipeline, builds DESC, branch
