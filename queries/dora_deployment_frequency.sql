-- DORA deployment frequency: how often does each deploy pipeline put a change into production?
--
-- A deployment is a passed build of a deploy pipeline (the deployments view: the deploy_pipelines
-- setting says which pipelines deploy). Per deploy pipeline, and for all of them together (the
-- row named "(all)"), over deployment attempts that finished in the window [since, until):
--   attempts              deploy builds with a verdict (passed or failed)
--   deployments           passed deploy builds
--   deployment_days       UTC days with at least one deployment
--   deployments_per_week  deployments x 7 / the window's length in days
--   median_weekly         the median of the deployments in each whole week of the window, weeks
--                         counted back from its end (a week without one counts as 0; null for a
--                         window shorter than a week)
--   band                  elite   median_weekly at least 7: daily or more, on demand
--                         high    median_weekly at least 1: between daily and weekly
--                         medium  fewer, but at least one deployment per 30 days on average
--                         low     fewer still
-- The bands follow the ranges of the DORA State of DevOps report 2019 (on demand; daily to weekly;
-- weekly to monthly; monthly or less). The median week, not the average, decides: a burst of
-- deployments in one week does not make a month elite.
WITH attempts AS (
  SELECT
    scope AS pipeline,
    deployed,
    finished_at,
    DIV(TIMESTAMP_DIFF(@until, finished_at, SECOND), 604800) AS weeks_back
  FROM `${project}.${bigquery_dataset}.deployments`
  CROSS JOIN UNNEST([pipeline_slug, '(all)']) AS scope
  WHERE finished_at >= @since AND finished_at < @until
),

whole_weeks AS (
  SELECT
    pipeline,
    weeks_back
  FROM (SELECT DISTINCT pipeline FROM attempts)
  CROSS JOIN UNNEST(GENERATE_ARRAY(0, DIV(TIMESTAMP_DIFF(@until, @since, SECOND), 604800) - 1)) AS weeks_back
),

weekly AS (
  SELECT
    w.pipeline,
    w.weeks_back,
    COUNTIF(IFNULL(a.deployed, FALSE)) AS deployments
  FROM whole_weeks AS w
  LEFT JOIN attempts AS a ON a.pipeline = w.pipeline AND a.weeks_back = w.weeks_back
  GROUP BY w.pipeline, w.weeks_back
),

medians AS (
  SELECT DISTINCT
    pipeline,
    PERCENTILE_CONT(deployments, 0.5) OVER (PARTITION BY pipeline) AS median_weekly
  FROM weekly
),

totals AS (
  SELECT
    pipeline,
    COUNT(*) AS attempts,
    COUNTIF(deployed) AS deployments,
    COUNT(DISTINCT IF(deployed, DATE(finished_at), NULL)) AS deployment_days,
    COUNTIF(deployed) * 7 / (TIMESTAMP_DIFF(@until, @since, SECOND) / 86400) AS deployments_per_week,
    COUNTIF(deployed) * 30 / (TIMESTAMP_DIFF(@until, @since, SECOND) / 86400) AS deployments_per_30_days
  FROM attempts
  GROUP BY pipeline
)

SELECT
  t.pipeline,
  t.attempts,
  t.deployments,
  t.deployment_days,
  t.deployments_per_week,
  m.median_weekly,
  CASE
    WHEN m.median_weekly >= 7 THEN 'elite'
    WHEN m.median_weekly >= 1 THEN 'high'
    WHEN m.median_weekly IS NULL AND t.deployments_per_week >= 7 THEN 'elite'
    WHEN m.median_weekly IS NULL AND t.deployments_per_week >= 1 THEN 'high'
    WHEN t.deployments_per_30_days >= 1 THEN 'medium'
    ELSE 'low'
  END AS band
FROM totals AS t
LEFT JOIN medians AS m ON m.pipeline = t.pipeline
ORDER BY t.pipeline = '(all)' DESC, t.pipeline
