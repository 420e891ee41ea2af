-- Which steps are flaky?
--
-- A step is flaky in a build when one of its jobs failed (a hard failure of the code: soft
-- failures and failures of the machine, like a lost agent, do not count) and its last attempt in
-- that build passed: it failed, was retried (automatically or by hand) and passed on the same
-- commit. Parallel shards are judged one by one. Per pipeline
-- and step (its key, else its name), over command jobs that finished in the window [since, until):
--   builds        builds that ran the step
--   flaky_builds  builds where it was flaky
--   flake_rate    flaky_builds / builds
--   retries       attempts after the first, in the flaky builds
--   last_flaky_at when the passing attempt of the latest flaky build finished
-- Steps that were never flaky have no row.
WITH attempts AS (
  SELECT
    pipeline_slug,
    build_id,
    IFNULL(step_key, name) AS step,
    name,
    parallel_group_index,
    IFNULL(state, 'unknown') AS state,
    IFNULL(soft_failed, FALSE) AS soft_failed,
    IFNULL(infrastructure_failure, FALSE) AS infrastructure_failure,
    finished_at
  FROM `${project}.${bigquery_dataset}.jobs_latest`
  WHERE finished_at >= @since AND finished_at < @until
    AND job_type = 'script'
),

-- Every attempt at one step (one parallel shard) in one build.
chains AS (
  SELECT
    pipeline_slug,
    step,
    build_id,
    MAX(name) AS name,
    COUNT(*) AS attempts,
    COUNTIF(state = 'failed' AND NOT soft_failed AND NOT infrastructure_failure) AS hard_failures,
    ARRAY_AGG(state ORDER BY finished_at DESC LIMIT 1)[OFFSET(0)] AS last_state,
    MAX(finished_at) AS last_finished_at
  FROM attempts
  GROUP BY pipeline_slug, step, build_id, parallel_group_index
),

judged AS (
  SELECT
    *,
    hard_failures > 0 AND last_state = 'passed' AS flaky
  FROM chains
)

SELECT
  pipeline_slug AS pipeline,
  step,
  MAX(name) AS name,
  COUNT(DISTINCT build_id) AS builds,
  COUNT(DISTINCT IF(flaky, build_id, NULL)) AS flaky_builds,
  SAFE_DIVIDE(COUNT(DISTINCT IF(flaky, build_id, NULL)), COUNT(DISTINCT build_id)) AS flake_rate,
  SUM(IF(flaky, attempts - 1, 0)) AS retries,
  MAX(IF(flaky, last_finished_at, NULL)) AS last_flaky_at
FROM judged
GROUP BY pipeline_slug, step
HAVING COUNT(DISTINCT IF(flaky, build_id, NULL)) > 0
ORDER BY flaky_builds DESC, flake_rate DESC, pipeline, step
