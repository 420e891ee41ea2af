-- jobs_latest: one row per job. Queries read this view, never the jobs table, which can hold
-- a job twice after a redelivery or a retried insert. A retried step is a new job (a new
-- job_id), so every attempt stays visible here.
SELECT
  * EXCEPT (row_rank)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (
      PARTITION BY job_id
      ORDER BY finished_at DESC, inserted_at DESC, event_key
    ) AS row_rank
  FROM `${project}.${bigquery_dataset}.jobs`
)
WHERE row_rank = 1
