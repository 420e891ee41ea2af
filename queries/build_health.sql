-- Which pipelines are slow or failing?
--
-- Per pipeline and branch, over builds that finished in the window [since, until):
--   builds        every finished build: passed, failed, canceled, skipped, blocked, not_run
--   passed/failed builds with a verdict
--   failure_rate  failed / (passed + failed); canceled, skipped and blocked builds have no verdict
--   infrastructure_failed  failed builds in which a step's last attempt failed for an infrastructure
--                 cause (the agent lost or stopped, ...: jobs.failure_cause): the machine failed, not
--                 the code. They are in failed and in failure_rate too
--   duration      started -> finished, of builds with a verdict (p50, p95)
--   wait          scheduled -> started: how long the build waited for its first agent (p50, p95)
-- Percentiles are exact (PERCENTILE_CONT: linear interpolation between the two nearest values).
WITH last_attempts AS (
  SELECT
    build_id,
    ARRAY_AGG(
      IFNULL(infrastructure_failure, FALSE) AND NOT IFNULL(soft_failed, FALSE) ORDER BY finished_at DESC LIMIT 1
    )[OFFSET(0)] AS infrastructure
  FROM `${project}.${bigquery_dataset}.jobs_latest`
  WHERE job_type = 'script'
  GROUP BY build_id, IFNULL(step_key, name), parallel_group_index
),

infrastructure_builds AS (
  SELECT build_id
  FROM last_attempts
  GROUP BY build_id
  HAVING LOGICAL_OR(infrastructure)
),

builds AS (
  SELECT
    b.pipeline_slug,
    b.branch,
    b.outcome,
    b.outcome = 'failed' AND i.build_id IS NOT NULL AS infrastructure_failed,
    IF(b.outcome IN ('passed', 'failed'), b.duration_seconds, NULL) AS duration_seconds,
    b.wait_seconds
  FROM `${project}.${bigquery_dataset}.builds_latest` AS b
  LEFT JOIN infrastructure_builds AS i ON i.build_id = b.build_id
  WHERE b.finished_at >= @since AND b.finished_at < @until
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
  COUNTIF(infrastructure_failed) AS infrastructure_failed,
  ANY_VALUE(p50_duration) AS p50_duration_seconds,
  ANY_VALUE(p95_duration) AS p95_duration_seconds,
  ANY_VALUE(p50_wait) AS p50_wait_seconds,
  ANY_VALUE(p95_wait) AS p95_wait_seconds
FROM with_percentiles
GROUP BY pipeline_slug, branch
ORDER BY pipeline, builds DESC, branch
