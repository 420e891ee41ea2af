# What operators see: the log-based metrics, the dashboard and the alerts, on the fixture
# manifests (an HTTP ingress and the Pub/Sub functions chat-notify, event-archive and
# metrics-writer). tests/test_monitoring.py runs log lines the code writes through the
# rendered filters and extractors; here the wiring between them is checked.

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
  manifests_file        = "tests/fixtures/manifests.json"
  bundle_dir            = "tests/fixtures/bundles"
  bigquery_schema_dir   = "tests/fixtures/schemas"
  bigquery_views_dir    = "tests/fixtures/views"
  notification_channels = ["projects/fanout-test/notificationChannels/42"]
}

run "log_metrics_count_each_functions_one_line_per_delivery" {
  command = apply

  assert {
    condition = (
      google_logging_metric.deliveries[0].filter == "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = (\"chat-notify\" OR \"event-archive\" OR \"metrics-writer\") AND jsonPayload.outcome:*" &&
      google_logging_metric.delivery_duration[0].filter == google_logging_metric.deliveries[0].filter
    )
    error_message = "Both delivery metrics must read exactly the outcome lines of the Pub/Sub functions' services, got: ${google_logging_metric.deliveries[0].filter}"
  }
  assert {
    condition = alltrue([
      for metric in [google_logging_metric.deliveries[0], google_logging_metric.delivery_duration[0]] :
      metric.label_extractors == tomap({ function = "EXTRACT(jsonPayload.function)", outcome = "EXTRACT(jsonPayload.outcome)" }) &&
      toset([for label in metric.metric_descriptor[0].labels : label.key]) == toset(keys(metric.label_extractors)) &&
      metric.metric_descriptor[0].metric_kind == "DELTA"
    ])
    error_message = "Each delivery metric must label its points with the logged function and outcome, and declare exactly the labels it extracts."
  }
  assert {
    condition = (
      google_logging_metric.deliveries[0].metric_descriptor[0].value_type == "INT64" &&
      google_logging_metric.delivery_duration[0].metric_descriptor[0].value_type == "DISTRIBUTION" &&
      google_logging_metric.delivery_duration[0].metric_descriptor[0].unit == "ms" &&
      google_logging_metric.delivery_duration[0].value_extractor == "EXTRACT(jsonPayload.duration_ms)" &&
      pow(google_logging_metric.delivery_duration[0].bucket_options[0].exponential_buckets[0].growth_factor, google_logging_metric.delivery_duration[0].bucket_options[0].exponential_buckets[0].num_finite_buckets) > 540000
    )
    error_message = "Delivery durations must be a distribution of duration_ms in milliseconds whose buckets reach past the longest function timeout (540 s)."
  }
  assert {
    condition = (
      google_logging_metric.ingress_responses[0].filter == "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = (\"ingress\") AND logName = \"projects/fanout-test/logs/run.googleapis.com%2Frequests\"" &&
      google_logging_metric.ingress_responses[0].label_extractors == tomap({ status = "EXTRACT(httpRequest.status)" })
    )
    error_message = "The ingress's answers must be counted from its Cloud Run request log, by HTTP status, got: ${google_logging_metric.ingress_responses[0].filter}"
  }
  assert {
    condition     = length(distinct([for m in [google_logging_metric.deliveries[0], google_logging_metric.delivery_duration[0], google_logging_metric.ingress_responses[0]] : m.name])) == 3
    error_message = "Each log-based metric needs its own name."
  }
}

run "the_dashboard_charts_every_function" {
  command = apply

  assert {
    condition = [for tile in jsondecode(google_monitoring_dashboard.fanout.dashboard_json).mosaicLayout.tiles : tile.widget.title] == [
      "Ingress answers per minute, by HTTP status class",
      "Dead-letter backlog: events each function gave up on",
      "p95 duration of a delivery that did its work (outcome done)",
      "Oldest unacknowledged message, per subscription",
      "chat-notify: deliveries per minute, by outcome",
      "event-archive: deliveries per minute, by outcome",
      "metrics-writer: deliveries per minute, by outcome",
    ]
    error_message = "The dashboard must show the ingress, the dead-letter backlogs, p95 durations, oldest unacked ages and each function's outcomes."
  }
  assert {
    # Two 6-wide charts per row of a 12-column grid, none overlapping; the API leaves out
    # zero positions, and so must we (or every plan shows a change).
    condition = alltrue([
      for index, tile in jsondecode(google_monitoring_dashboard.fanout.dashboard_json).mosaicLayout.tiles :
      try(tile.xPos, 0) == (index % 2) * 6 && try(tile.yPos, 0) == floor(index / 2) * 4 &&
      try(tile.xPos, 1) != 0 && try(tile.yPos, 1) != 0 && tile.width == 6 && tile.height == 4
    ]) && jsondecode(google_monitoring_dashboard.fanout.dashboard_json).mosaicLayout.columns == 12
    error_message = "Charts must tile two per row on the 12-column grid without overlapping."
  }
  assert {
    condition = alltrue(flatten([
      for tile in jsondecode(google_monitoring_dashboard.fanout.dashboard_json).mosaicLayout.tiles : [
        for data in tile.widget.xyChart.dataSets :
        contains(concat(
          [for m in [google_logging_metric.deliveries[0], google_logging_metric.delivery_duration[0], google_logging_metric.ingress_responses[0]] : "metric.type = \"logging.googleapis.com/user/${m.name}\""],
          ["metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\"", "metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""],
        ), split(" AND ", data.timeSeriesQuery.timeSeriesFilter.filter)[0])
      ]
    ]))
    error_message = "Every chart must read one of our log-based metrics or a Pub/Sub subscription metric."
  }
  assert {
    condition = alltrue([
      for name in keys(google_pubsub_subscription.dead_letter) :
      strcontains(jsondecode(google_monitoring_dashboard.fanout.dashboard_json).mosaicLayout.tiles[1].widget.xyChart.dataSets[0].timeSeriesQuery.timeSeriesFilter.filter, "\"${google_pubsub_subscription.dead_letter[name].name}\"") &&
      strcontains(jsondecode(google_monitoring_dashboard.fanout.dashboard_json).mosaicLayout.tiles[3].widget.xyChart.dataSets[0].timeSeriesQuery.timeSeriesFilter.filter, "\"${google_pubsub_subscription.push[name].name}\"") &&
      strcontains(jsondecode(google_monitoring_dashboard.fanout.dashboard_json).mosaicLayout.tiles[3].widget.xyChart.dataSets[0].timeSeriesQuery.timeSeriesFilter.filter, "\"${google_pubsub_subscription.replay[name].name}\"")
    ])
    error_message = "The backlog chart must cover every dead-letter subscription, the age chart every push and replay subscription."
  }
  assert {
    condition = [
      for data in jsondecode(google_monitoring_dashboard.fanout.dashboard_json).mosaicLayout.tiles[0].widget.xyChart.dataSets :
      [data.legendTemplate, regex("starts_with\\(\"(\\d)\"\\)$", data.timeSeriesQuery.timeSeriesFilter.filter)[0]]
    ] == [["2xx", "2"], ["4xx", "4"], ["5xx", "5"]]
    error_message = "The ingress chart must show 2xx, 4xx and 5xx answers apart."
  }
}

run "alerts_page_the_same_channels" {
  command = apply

  assert {
    condition = alltrue([
      for policy in [google_monitoring_alert_policy.dead_letter_backlog[0], google_monitoring_alert_policy.config_error[0], google_monitoring_alert_policy.ingress_errors[0]] :
      policy.notification_channels == tolist(["projects/fanout-test/notificationChannels/42"])
    ])
    error_message = "Every alert must notify the same channels."
  }
  assert {
    condition = (
      google_monitoring_alert_policy.config_error[0].conditions[0].condition_threshold[0].filter == "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.deliveries[0].name}\" AND metric.label.outcome = \"config_error\"" &&
      google_monitoring_alert_policy.config_error[0].conditions[0].condition_threshold[0].duration == "0s" &&
      google_monitoring_alert_policy.config_error[0].conditions[0].condition_threshold[0].threshold_value == 0 &&
      google_monitoring_alert_policy.config_error[0].conditions[0].condition_threshold[0].aggregations[0].group_by_fields == tolist(["metric.label.function"]) &&
      google_monitoring_alert_policy.config_error[0].severity == "CRITICAL"
    )
    error_message = "A single config_error delivery must page at once, per function."
  }
  assert {
    condition = (
      google_monitoring_alert_policy.ingress_errors[0].conditions[0].condition_threshold[0].filter == "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.ingress_responses[0].name}\" AND metric.label.status = starts_with(\"5\")" &&
      google_monitoring_alert_policy.ingress_errors[0].conditions[0].condition_threshold[0].duration == "0s" &&
      google_monitoring_alert_policy.ingress_errors[0].conditions[0].condition_threshold[0].threshold_value == 0
    )
    error_message = "A single 5xx from the ingress (a webhook Buildkite will not send again) must open an incident."
  }
  assert {
    condition = (
      strcontains(google_monitoring_alert_policy.dead_letter_backlog[0].documentation[0].content, "replay topic") &&
      !strcontains(google_monitoring_alert_policy.dead_letter_backlog[0].documentation[0].content, "answered 2xx") &&
      strcontains(google_monitoring_alert_policy.config_error[0].documentation[0].content, "make replay FUNCTION=$${metric.label.function}")
    )
    error_message = "The runbooks must describe replays as they work: through each function's replay topic."
  }
}

run "an_ingress_alone_gets_its_chart_and_alert_only" {
  command = apply

  variables {
    enabled_functions = ["ingress"]
  }

  assert {
    condition = (
      length(google_logging_metric.deliveries) == 0 && length(google_logging_metric.delivery_duration) == 0 &&
      length(google_monitoring_alert_policy.config_error) == 0 && length(google_monitoring_alert_policy.dead_letter_backlog) == 0 &&
      length(google_logging_metric.ingress_responses) == 1 && length(google_monitoring_alert_policy.ingress_errors) == 1
    )
    error_message = "Without Pub/Sub functions there is nothing to count per delivery."
  }
  assert {
    condition     = [for tile in jsondecode(google_monitoring_dashboard.fanout.dashboard_json).mosaicLayout.tiles : tile.widget.title] == ["Ingress answers per minute, by HTTP status class"]
    error_message = "The dashboard must chart only what is deployed."
  }
}
