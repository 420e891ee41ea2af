-- Which failures were the machines', not the code's?
--
-- Per agent queue, over command jobs that finished in the window [since, until) (jobs_latest:
-- each attempt of a step is its own job). A job's failure_cause says why it did not pass; the
-- infrastructure causes are the agent being lost (exit status -1) or stopped (signal reason
-- agent_stop, exit status 255), refusing or unable to run the job, infrastructure that could
-- not be provisioned (stack_error), a process that could not start, and a job that expired with
-- no agent to take it (see schemas/bigquery/jobs.json):
--   jobs                  command jobs
--   failed                jobs that did not pass, for any cause (canceled jobs and soft failures excluded)
--   infrastructure        failed jobs with an infrastructure cause
--   agent_lost, agent_stopped
--   infrastructure_share  infrastructure / failed
--   recovered_by_retry    infrastructure failures whose step passed on a later attempt in the same build
-- Queues without a failure have no row.
WITH jobs AS (
  SELECT
    IFNULL(queue, 'default') AS queue,
    build_id,
    IFNULL(step_key, name) AS step,
    parallel_group_index,
    state,
    finished_at,
    failure_cause,
    IFNULL(infrastructure_failure, FALSE) AS infrastructure,
    IFNULL(failure_cause != 'canceled' AND NOT IFNULL(soft_failed, FALSE), FALSE) AS failed
  FROM `${project}.${bigquery_dataset}.jobs_latest`
  WHERE finished_at >= @since AND finished_at < @until
    AND job_type = 'script'
),

-- Did a later attempt of the same step (the same parallel shard) in the same build pass?
judged AS (
  SELECT
    *,
    MAX(IF(state = 'passed', 1, 0)) OVER (
      PARTITION BY build_id, step, parallel_group_index
      ORDER BY finished_at
      ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
    ) = 1 AS passed_later
  FROM jobs
)

SELECT
  queue,
  COUNT(*) AS jobs,
  COUNTIF(failed) AS failed,
  COUNTIF(failed AND infrastructure) AS infrastructure,
  COUNTIF(failed AND failure_cause = 'agent_lost') AS agent_lost,
  COUNTIF(failed AND failure_cause = 'agent_stopped') AS agent_stopped,
  SAFE_DIVIDE(COUNTIF(failed AND infrastructure), COUNTIF(failed)) AS infrastructure_share,
  COUNTIF(failed AND infrastructure AND IFNULL(passed_later, FALSE)) AS recovered_by_retry
FROM judged
GROUP BY queue
HAVING COUNTIF(failed) > 0
ORDER BY infrastructure DESC, queue
