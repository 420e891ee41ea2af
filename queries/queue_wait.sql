-- Are we short of agents?
--
-- Per agent queue, over command jobs that started and finished in the window [since, until): jobs,
-- p50 and p95 wait for an agent (runnable -> started), the longest wait, and total agent time
-- (the sum of run times, in hours).
SELECT
  queue,
  COUNT(*) AS jobs,
  ANY_VALUE(p50_wait) AS p50_wait_seconds,
  ANY_VALUE(p95_wait) AS p95_wait_seconds,
  MAX(wait_seconds) AS longest_wait_seconds,
  SUM(run_seconds) / 3600 AS agent_hours
FROM (
  SELECT
    IFNULL(queue, 'default') AS queue,
    wait_seconds,
    run_seconds,
    PERCENTILE_CONT(wait_seconds, 0.5) OVER (PARTITION BY IFNULL(queue, 'default')) AS p50_wait,
    PERCENTILE_CONT(wait_seconds, 0.95) OVER (PARTITION BY IFNULL(queue, 'default')) AS p95_wait
  FROM `${project}.${bigquery_dataset}.jobs_latest`
  WHERE finished_at >= @since AND finished_at < @until
    AND job_type = 'script'
    AND started_at IS NOT NULL
)
GROUP BY queue
ORDER BY p95_wait_seconds DESC, queue
