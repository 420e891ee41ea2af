-- DORA time to restore service: once a deployment fails, how long until production is good again?
--
-- An incident starts with a failed change (a deployment attempt that failed, or a deployment
-- that was rolled back: the deployments view) after one that was not, and ends with that deploy
-- pipeline's next deployment that is not a failed change. Failed changes in a row are one
-- incident, counted once (counting each failure, or each failure per affected deployment, is
-- how fourkeys double-counts). Incidents are found over the whole history, so one that began
-- before the window keeps its real start. Per deploy pipeline and for all of them together (the
-- row named "(all)"), over incidents that started in the window [since, until):
--   incidents                        incidents that started in the window
--   restored                         those a good deployment ended before the window's end
--   median_time_to_restore_seconds   first failed change finished -> good deployment finished; an
--                                    incident still open at the window's end lasts until then (it
--                                    took at least that long: leaving it out would flatter the median)
--   mean_time_to_restore_seconds, longest_time_to_restore_seconds
--   still_failing                    an incident was not restored by the window's end
--   band                             on the median: elite less than an hour; high less than a day;
--                                    medium less than a week; low longer (DORA State of DevOps
--                                    report 2021; its gap between a week and six months goes to low)
WITH attempts AS (
  SELECT
    pipeline_slug,
    number,
    finished_at,
    failed_change,
    LAG(failed_change) OVER (PARTITION BY pipeline_slug ORDER BY finished_at, number) AS previous_failed
  FROM `${project}.${bigquery_dataset}.deployments`
),

-- Only the attempts where the state flipped: each failed change here starts an incident, and
-- the change after it is the deployment that ended it.
flips AS (
  SELECT
    pipeline_slug,
    failed_change,
    finished_at,
    LEAD(finished_at) OVER (PARTITION BY pipeline_slug ORDER BY finished_at, number) AS restored_at
  FROM attempts
  WHERE previous_failed IS NULL OR failed_change != previous_failed
),

incidents AS (
  SELECT
    scope AS pipeline,
    finished_at AS started_at,
    IF(restored_at < @until, restored_at, NULL) AS restored_at
  FROM flips
  CROSS JOIN UNNEST([pipeline_slug, '(all)']) AS scope
  WHERE failed_change AND finished_at >= @since AND finished_at < @until
),

with_percentiles AS (
  SELECT
    *,
    TIMESTAMP_DIFF(IFNULL(restored_at, @until), started_at, MILLISECOND) / 1000 AS seconds,
    PERCENTILE_CONT(TIMESTAMP_DIFF(IFNULL(restored_at, @until), started_at, MILLISECOND) / 1000, 0.5)
      OVER (PARTITION BY pipeline) AS median_seconds
  FROM incidents
)

SELECT
  pipeline,
  COUNT(*) AS incidents,
  COUNT(restored_at) AS restored,
  ANY_VALUE(median_seconds) AS median_time_to_restore_seconds,
  AVG(seconds) AS mean_time_to_restore_seconds,
  MAX(seconds) AS longest_time_to_restore_seconds,
  LOGICAL_OR(restored_at IS NULL) AS still_failing,
  CASE
    WHEN ANY_VALUE(median_seconds) IS NULL THEN NULL
    WHEN ANY_VALUE(median_seconds) < 3600 THEN 'elite'
    WHEN ANY_VALUE(median_seconds) < 86400 THEN 'high'
    WHEN ANY_VALUE(median_seconds) < 7 * 86400 THEN 'medium'
    ELSE 'low'
  END AS band
FROM with_percentiles
GROUP BY pipeline
ORDER BY pipeline = '(all)' DESC, pipeline
