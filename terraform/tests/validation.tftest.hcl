# Bad configuration stops at plan with an error that names the problem.

mock_provider "google" {}

mock_provider "time" {}

variables {
  project_id          = "fanout-test"
  manifests_file      = "tests/fixtures/manifests.json"
  bundle_dir          = "tests/fixtures/bundles"
  bigquery_schema_dir = "tests/fixtures/empty"
  bigquery_views_dir  = "tests/fixtures/empty"

  notification_channels = ["projects/fanout-test/notificationChannels/42"]
}

run "the_fixtures_plan_cleanly" {
  command = plan

  assert {
    condition     = length(google_cloudfunctions2_function.function) == 4
    error_message = "The valid fixtures must plan without errors."
  }
}

run "an_unknown_function_in_enabled_functions" {
  command = plan

  variables {
    enabled_functions = ["ingress", "chat-notfy"]
  }

  expect_failures = [var.enabled_functions]
}

run "an_archive_retention_of_zero_days" {
  command = plan

  variables {
    archive_retention_days = 0
  }

  expect_failures = [var.archive_retention_days]
}

run "an_archive_retention_of_part_of_a_day" {
  command = plan

  variables {
    archive_retention_days = 1.5
  }

  expect_failures = [var.archive_retention_days]
}

run "an_invalid_subscription_filter" {
  command = plan

  variables {
    manifests_file = "tests/fixtures/bad-filter/manifests.json"
    bundle_dir     = "tests/fixtures/bad-filter/bundles"
  }

  expect_failures = [google_cloudfunctions2_function.function]
}

run "an_unknown_env_placeholder" {
  command = plan

  variables {
    manifests_file = "tests/fixtures/bad-placeholder/manifests.json"
    bundle_dir     = "tests/fixtures/bad-placeholder/bundles"
  }

  expect_failures = [google_cloudfunctions2_function.function]
}

run "a_manifest_named_unlike_its_folder" {
  command = plan

  variables {
    manifests_file = "tests/fixtures/bad-name/manifests.json"
    bundle_dir     = "tests/fixtures/bad-name/bundles"
  }

  expect_failures = [google_cloudfunctions2_function.function]
}

run "a_custom_role_terraform_does_not_define" {
  command = plan

  variables {
    manifests_file = "tests/fixtures/bad-role/manifests.json"
    bundle_dir     = "tests/fixtures/bad-role/bundles"
  }

  expect_failures = [google_cloudfunctions2_function.function]
}

run "manifests_not_normalised_yet" {
  command = plan

  variables {
    manifests_file = "tests/fixtures/empty/manifests.json"
  }

  # No build/manifests.json: the plan stops rather than seeing no functions at all.
  expect_failures = [data.google_project.this]
}

run "manifests_changed_since_they_were_normalised" {
  command = plan

  variables {
    manifests_file = "tests/fixtures/stale/manifests.json"
  }

  expect_failures = [data.google_project.this]
}

run "a_project_name_instead_of_an_id" {
  command = plan

  variables {
    project_id = "My Project"
  }

  expect_failures = [var.project_id]
}

run "a_zone_instead_of_a_region" {
  command = plan

  variables {
    region = "europe-west1-b"
  }

  expect_failures = [var.region]
}

run "a_dataset_id_with_dashes" {
  command = plan

  variables {
    bigquery_dataset_id = "build-metrics"
  }

  expect_failures = [var.bigquery_dataset_id]
}

run "an_ack_deadline_shorter_than_the_timeout_plus_a_margin" {
  command = plan

  variables {
    manifests_file = "tests/fixtures/short-ack/manifests.json"
    bundle_dir     = "tests/fixtures/short-ack/bundles"
  }

  expect_failures = [google_cloudfunctions2_function.function]
}

run "an_unknown_public_ingress_mode" {
  command = plan

  variables {
    public_ingress = "public"
  }

  expect_failures = [var.public_ingress]
}

run "otlp_export_without_an_endpoint" {
  command = plan

  variables {
    trace_exporter = "otlp"
  }

  expect_failures = [var.trace_otlp_endpoint]
}

run "an_unknown_trace_exporter" {
  command = plan

  variables {
    trace_exporter = "jaeger"
  }

  expect_failures = [var.trace_exporter]
}

run "no_one_told_about_incidents" {
  command = plan

  variables {
    notification_channels = []
  }

  # Accepted, but every plan says it out loud.
  expect_failures = [check.alerts_reach_someone]
}

run "bundles_not_built_yet" {
  command = plan

  variables {
    bundle_dir = "tests/fixtures/empty"
  }

  # A warning, not an error: a plan after the first apply does not need the bundles.
  expect_failures = [check.bundles_built]
}
