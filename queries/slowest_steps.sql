-- Which steps make builds slow?
--
-- Per pipeline and step (its key, else its name), over command jobs that ran and finished in
-- the window [since, until): runs, failures, p50 and p95 run time, p50 and p95 wait for an agent.
-- The top_n steps with the highest p95 run time in each pipeline.
WITH runs AS (
  SELECT
    pipeline_slug,
    IFNULL(step_key, name) AS step,
    name,
    state,
    run_seconds,
    wait_seconds
  FROM `${project}.${bigquery_dataset}.jobs_latest`
  WHERE finished_at >= @since AND finished_at < @until
    AND job_type = 'script'
    AND run_seconds IS NOT NULL
),

steps AS (
  SELECT
    pipeline_slug AS pipeline,
    step,
    MAX(name) AS name,
    COUNT(*) AS runs,
    COUNTIF(state = 'failed') AS failed,
    ANY_VALUE(p50_run) AS p50_run_seconds,
    ANY_VALUE(p95_run) AS p95_run_seconds,
    ANY_VALUE(p50_wait) AS p50_wait_seconds,
    ANY_VALUE(p95_wait) AS p95_wait_seconds
  FROM (
    SELECT
      *,
      PERCENTILE_CONT(run_seconds, 0.5) OVER (PARTITION BY pipeline_slug, step) AS p50_run,
      PERCENTILE_CONT(run_seconds, 0.95) OVER (PARTITION BY pipeline_slug, step) AS p95_run,
      PERCENTILE_CONT(wait_seconds, 0.5) OVER (PARTITION BY pipeline_slug, step) AS p50_wait,
      PERCENTILE_CONT(wait_seconds, 0.95) OVER (PARTITION BY pipeline_slug, step) AS p95_wait
    FROM runs
  )
  GROUP BY pipeline_slug, step
)

SELECT * EXCEPT (slowest)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (PARTITION BY pipeline ORDER BY p95_run_seconds DESC, step) AS slowest
  FROM steps
)
WHERE slowest <= @top_n
ORDER BY pipeline, p95_run_seconds DESC, step
