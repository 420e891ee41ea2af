# Log-based metrics: what the dashboard (dashboard.tf) and the alerts (monitoring.tf) chart.
#
# Every Pub/Sub function writes one JSON line per delivery (buildkite_events.handler), and
# Cloud Run stores each stdout JSON line as a log entry's jsonPayload: `outcome` (done,
# filtered, invalid, config_error, retry, error, ...), `duration_ms`, `function`. The ingress
# is counted from Cloud Run's request log instead, whose httpRequest.status holds every
# answer, including those its code never logs (a 400 for a malformed body, a crash's 500,
# Cloud Run's own 429/503/504). tests/test_monitoring.py renders these resources and runs
# log lines the code really writes through their filters and extractors.

locals {
  # Cloud Functions (2nd gen) run as Cloud Run services named like the function.
  pubsub_services = join(" OR ", [for name in sort(keys(local.pubsub_functions)) : "\"${name}\""])
  http_services   = join(" OR ", [for name in sort(keys(local.http_functions)) : "\"${name}\""])

  log_metrics = {
    deliveries        = "buildkite-fanout/deliveries"
    delivery_duration = "buildkite-fanout/delivery-duration"
    ingress_responses = "buildkite-fanout/ingress-responses"
  }
  # As Cloud Monitoring names them: metric.type in charts and alert conditions.
  log_metric_types = { for key, name in local.log_metrics : key => "logging.googleapis.com/user/${name}" }

  # The one line per delivery, and no other line (the handler's own lines carry `function`
  # too, but never `outcome`).
  delivery_lines = join(" AND ", [
    "resource.type = \"cloud_run_revision\"",
    "resource.labels.service_name = (${local.pubsub_services})",
    "jsonPayload.outcome:*",
  ])

  # Both delivery metrics label their points with these fields of the line.
  delivery_labels = {
    function = {
      extractor   = "EXTRACT(jsonPayload.function)"
      description = "The function that handled the delivery."
    }
    outcome = {
      extractor   = "EXTRACT(jsonPayload.outcome)"
      description = "What the function did: done, filtered, skipped, duplicate, invalid (acked) or config_error, retry, error (nacked)."
    }
  }
}

resource "google_logging_metric" "deliveries" {
  count = length(local.pubsub_functions) > 0 ? 1 : 0

  project     = var.project_id
  name        = local.log_metrics.deliveries
  description = "Pub/Sub deliveries each function handled, by the outcome it logged."
  filter      = local.delivery_lines

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "buildkite-fanout deliveries"

    dynamic "labels" {
      for_each = local.delivery_labels
      content {
        key         = labels.key
        value_type  = "STRING"
        description = labels.value.description
      }
    }
  }
  label_extractors = { for key, label in local.delivery_labels : key => label.extractor }

  depends_on = [google_project_service.enabled]
}

resource "google_logging_metric" "delivery_duration" {
  count = length(local.pubsub_functions) > 0 ? 1 : 0

  project         = var.project_id
  name            = local.log_metrics.delivery_duration
  description     = "Time each function spent on a Pub/Sub delivery (parse, claim, the integration call with its in-process retries), by outcome."
  filter          = local.delivery_lines
  value_extractor = "EXTRACT(jsonPayload.duration_ms)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "buildkite-fanout delivery duration"

    dynamic "labels" {
      for_each = local.delivery_labels
      content {
        key         = labels.key
        value_type  = "STRING"
        description = labels.value.description
      }
    }
  }
  label_extractors = { for key, label in local.delivery_labels : key => label.extractor }

  # 1 ms to ~700 s (1.4^40 ms) in 40 buckets, each 40% wider than the one before: a p95
  # within about 20%, up to past the longest function timeout (540 s).
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 40
      growth_factor      = 1.4
      scale              = 1
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_logging_metric" "ingress_responses" {
  count = length(local.http_functions) > 0 ? 1 : 0

  project     = var.project_id
  name        = local.log_metrics.ingress_responses
  description = "Every answer the ingress gave Buildkite, by HTTP status (200 published, 401 bad token or signature, 4xx refused, 5xx lost: Buildkite does not retry)."
  filter = join(" AND ", [
    "resource.type = \"cloud_run_revision\"",
    "resource.labels.service_name = (${local.http_services})",
    "logName = \"projects/${var.project_id}/logs/run.googleapis.com%2Frequests\"",
  ])

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "buildkite-fanout ingress responses"

    labels {
      key         = "status"
      value_type  = "STRING"
      description = "The HTTP status code of the answer."
    }
  }
  label_extractors = {
    status = "EXTRACT(httpRequest.status)"
  }

  depends_on = [google_project_service.enabled]
}
