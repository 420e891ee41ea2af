-- deployments: one row per deployment attempt, the input of the DORA four keys (queries/dora_*.sql).
-- It reads the builds_latest view, so it lives in on_views/: Terraform creates it once that exists.
--
-- A deployment attempt is a build of a deploy pipeline that finished with a verdict (passed or
-- failed; canceled, skipped and still-blocked builds are not attempts), one row per build. Which
-- pipelines deploy is configuration, not code: Terraform's deploy_pipelines globs, rendered into
-- this view as one pattern over the pipeline slug.
--   deployed           the build passed: its commit is now in production
--   first_built_at     when the first build of the same commit, on any pipeline and branch, was
--                      created. Webhooks carry no commit time: a commit's first build is the
--                      nearest thing to it (Buildkite builds a commit when it is pushed)
--   lead_time_seconds  first_built_at to the deployment's finish, for the first passed deployment
--                      of a full commit SHA on this pipeline (a build of "HEAD" from the UI names no
--                      commit; a redeploy or a rollback of a commit brings no new change)
--   rolled_back        a passed deployment whose next deployment put back a different commit that
--                      this pipeline had deployed before it: the change was taken out again
--   failed_change      the attempt failed, or it was rolled back. Each attempt counts once, however
--                      many jobs failed in it
WITH attempts AS (
  SELECT
    pipeline_slug,
    build_id,
    number,
    branch,
    `commit` AS sha,
    source,
    outcome,
    outcome = 'passed' AS deployed,
    created_at,
    finished_at,
    MIN(IF(outcome = 'passed', finished_at, NULL)) OVER (PARTITION BY pipeline_slug, `commit`) AS sha_first_deployed_at
  FROM `${project}.${bigquery_dataset}.builds_latest`
  WHERE REGEXP_CONTAINS(pipeline_slug, r'${deploy_pipelines_regex}')
    AND outcome IN ('passed', 'failed')
),

first_builds AS (
  SELECT
    `commit` AS sha,
    MIN(COALESCE(created_at, scheduled_at, started_at, finished_at)) AS first_built_at
  FROM `${project}.${bigquery_dataset}.builds_latest`
  WHERE REGEXP_CONTAINS(`commit`, r'^[0-9a-f]{40}$')
  GROUP BY `commit`
),

-- Each pipeline's passed deployments in order, and what the next one deployed.
next_deployments AS (
  SELECT
    build_id,
    finished_at,
    sha,
    LEAD(sha) OVER (PARTITION BY pipeline_slug ORDER BY finished_at, number) AS next_sha,
    LEAD(sha_first_deployed_at) OVER (PARTITION BY pipeline_slug ORDER BY finished_at, number) AS next_sha_first_deployed_at
  FROM attempts
  WHERE deployed
),

rollbacks AS (
  SELECT
    build_id,
    next_sha != sha AND next_sha_first_deployed_at < finished_at AS rolled_back
  FROM next_deployments
)

SELECT
  a.pipeline_slug,
  a.build_id,
  a.number,
  a.branch,
  a.sha,
  a.source,
  a.outcome,
  a.deployed,
  a.created_at,
  a.finished_at,
  f.first_built_at,
  IF(
    a.deployed AND a.finished_at = a.sha_first_deployed_at,
    TIMESTAMP_DIFF(a.finished_at, f.first_built_at, MILLISECOND) / 1000,
    NULL
  ) AS lead_time_seconds,
  IFNULL(r.rolled_back, FALSE) AS rolled_back,
  NOT a.deployed OR IFNULL(r.rolled_back, FALSE) AS failed_change
FROM attempts AS a
LEFT JOIN first_builds AS f ON f.sha = a.sha
LEFT JOIN rollbacks AS r ON r.build_id = a.build_id
