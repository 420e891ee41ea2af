-- DORA lead time for changes: how long from a commit to that commit running in production?
--
-- Webhooks carry no commit time, so the clock starts when the commit's first build (on any
-- pipeline and branch: usually its pull request or branch build) was created, which Buildkite
-- does when the commit is pushed. It stops when a deploy pipeline's build of that commit passed
-- (the deployments view). This measures push to production: time a commit waited on a laptop
-- before it was pushed is not seen, and a deployment counts for its head commit only (older
-- commits it carries are not measured). Per deploy pipeline, and for all of them together (the
-- row named "(all)"), over deployments that finished in the window [since, until):
--   deployments          passed deploy builds
--   measured             those of a full commit SHA (a build of "HEAD" from the UI names no commit)
--   median_lead_time_seconds, p90_lead_time_seconds
--   band                 on the median: elite less than an hour; high less than a week; medium
--                        less than 180 days; low longer (DORA State of DevOps report 2021: under
--                        an hour, a day to a week, one to six months, over six months; the gaps
--                        between its ranges go to the faster band)
WITH deployments AS (
  SELECT
    scope AS pipeline,
    lead_time_seconds
  FROM `${project}.${bigquery_dataset}.deployments`
  CROSS JOIN UNNEST([pipeline_slug, '(all)']) AS scope
  WHERE deployed AND finished_at >= @since AND finished_at < @until
),

with_percentiles AS (
  SELECT
    *,
    PERCENTILE_CONT(lead_time_seconds, 0.5) OVER (PARTITION BY pipeline) AS median_lead_time,
    PERCENTILE_CONT(lead_time_seconds, 0.9) OVER (PARTITION BY pipeline) AS p90_lead_time
  FROM deployments
)

SELECT
  pipeline,
  COUNT(*) AS deployments,
  COUNT(lead_time_seconds) AS measured,
  ANY_VALUE(median_lead_time) AS median_lead_time_seconds,
  ANY_VALUE(p90_lead_time) AS p90_lead_time_seconds,
  CASE
    WHEN ANY_VALUE(median_lead_time) IS NULL THEN NULL
    WHEN ANY_VALUE(median_lead_time) < 3600 THEN 'elite'
    WHEN ANY_VALUE(median_lead_time) < 7 * 86400 THEN 'high'
    WHEN ANY_VALUE(median_lead_time) < 180 * 86400 THEN 'medium'
    ELSE 'low'
  END AS band
FROM with_percentiles
GROUP BY pipeline
ORDER BY pipeline = '(all)' DESC, pipeline
