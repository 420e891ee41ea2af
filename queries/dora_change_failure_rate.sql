-- DORA change failure rate: what share of deployments fail and need fixing?
--
-- Over deployment attempts that finished in the window [since, until) (the deployments view:
-- deploy pipeline builds that passed or failed), per deploy pipeline and for all of them together
-- (the row named "(all)"):
--   attempts             the denominator: every attempt, failed ones included, each build once
--   failed_deployments   attempts whose build failed
--   rolled_back          passed deployments that the next deployment took back out (it deployed a
--                        different commit this pipeline had deployed before)
--   change_failure_rate  (failed_deployments + rolled_back) / attempts: at most 100 %. A failed
--                        attempt is in the denominator too (counting failures over passed
--                        deployments only, as fourkeys does, can pass 100 %), and a deployment
--                        counts once however many jobs, incidents or commits it involves
--   band                 elite at most 15 %; high at most 30 %; medium at most 45 %; low above
--                        (DORA State of DevOps report 2021: elite 0-15 %, the other clusters all
--                        16-30 %; above elite, the 15-point steps of the fourkeys dashboard)
SELECT
  scope AS pipeline,
  COUNT(*) AS attempts,
  COUNTIF(NOT deployed) AS failed_deployments,
  COUNTIF(rolled_back) AS rolled_back,
  SAFE_DIVIDE(COUNTIF(failed_change), COUNT(*)) AS change_failure_rate,
  CASE
    WHEN SAFE_DIVIDE(COUNTIF(failed_change), COUNT(*)) <= 0.15 THEN 'elite'
    WHEN SAFE_DIVIDE(COUNTIF(failed_change), COUNT(*)) <= 0.30 THEN 'high'
    WHEN SAFE_DIVIDE(COUNTIF(failed_change), COUNT(*)) <= 0.45 THEN 'medium'
    ELSE 'low'
  END AS band
FROM `${project}.${bigquery_dataset}.deployments`
CROSS JOIN UNNEST([pipeline_slug, '(all)']) AS scope
WHERE finished_at >= @since AND finished_at < @until
GROUP BY scope
ORDER BY scope = '(all)' DESC, scope
