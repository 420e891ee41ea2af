# The repository's BigQuery views: every file becomes a view, views over views come second,
# and deploy_pipelines is rendered into the DORA views as one pattern.

mock_provider "google" {
  mock_data "google_project" {
    defaults = {
      number = "123456789012"
    }
  }
}

mock_provider "time" {}

variables {
  project_id            = "fanout-test"
  deploy_pipelines      = ["*-deploy", "release-?", "ship_it"]
  notification_channels = ["projects/fanout-test/notificationChannels/1"]
}

run "every_view_file_becomes_a_view_and_views_over_views_come_second" {
  command = plan

  assert {
    condition     = jsonencode(keys(google_bigquery_table.view_on_views)) == jsonencode(sort([for file in fileset("../queries/views", "on_views/*.sql") : trimsuffix(basename(file), ".sql")]))
    error_message = "Every queries/views/on_views/*.sql must become a view."
  }
  assert {
    condition     = alltrue([for view in google_bigquery_table.view_on_views : !can(regex("\\$\\{", view.view[0].query))])
    error_message = "Every placeholder in the views over views must be filled in."
  }
  assert {
    condition     = length(setintersection(keys(google_bigquery_table.view), keys(google_bigquery_table.view_on_views))) == 0
    error_message = "A view is made once, in one tier."
  }
}

run "deploy_pipelines_globs_become_one_anchored_pattern" {
  command = plan

  assert {
    condition     = strcontains(google_bigquery_table.view_on_views["deployments"].view[0].query, "r'^(.*-deploy|release-.|ship_it)$'")
    error_message = "deploy_pipelines must reach the deployments view as ^(glob|glob)$ with * as .* and ? as ."
  }
  assert {
    condition     = strcontains(google_bigquery_table.view_on_views["deployments"].view[0].query, "`fanout-test.buildkite.builds_latest`")
    error_message = "The deployments view reads builds_latest in the project's dataset."
  }
}

run "no_deploy_pipelines_means_no_deployments" {
  command = plan

  variables {
    deploy_pipelines = []
  }

  assert {
    condition     = strcontains(google_bigquery_table.view_on_views["deployments"].view[0].query, "r'^$'")
    error_message = "Without deploy pipelines the pattern must match no pipeline slug."
  }
}

run "a_deploy_pipeline_glob_that_is_not_a_slug" {
  command = plan

  variables {
    deploy_pipelines = ["Deploy.*"]
  }

  expect_failures = [var.deploy_pipelines]
}
