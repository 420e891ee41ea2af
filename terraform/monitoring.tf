# Alerts, all to var.notification_channels: a dead-letter queue that holds events, a
# function that reports a configuration error, and an ingress that answers 5xx. Each
# incident's documentation says what to do; terraform/README.md has the same runbook.

# An incident per dead-letter queue that holds messages: each one is an event a function
# gave up on, waiting for an operator to fix the cause and replay it.

resource "google_monitoring_alert_policy" "dead_letter_backlog" {
  count = length(local.pubsub_functions) > 0 ? 1 : 0

  project               = var.project_id
  display_name          = "buildkite-fanout: events in a dead-letter queue"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Undelivered messages in a dead-letter subscription"

    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"pubsub_subscription\"",
        "metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\"",
        "resource.label.subscription_id = one_of(${join(", ", [for name in sort(values(local.dead_letter_names)) : "\"${name}\""])})",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "${var.dead_letter_alert_after}s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "604800s" # the messages themselves expire after 7 days
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "buildkite-fanout: $${resource.label.subscription_id} holds events"
    content   = <<-EOT
      A function gave up on one or more Buildkite events after its retries; they wait in
      the dead-letter subscription named in this incident, for up to 7 days.

      1. Read the function's error logs to find the cause (configuration, credentials, a
         downstream outage) and fix it.
      2. Look at the messages and their last error: `PROJECT=<project> make dlq`.
      3. Replay them to that function only: `PROJECT=<project> make replay FUNCTION=<name>`.
         Each goes to the function's replay topic, whose one subscription delivers it with
         the same retries, and leaves the dead-letter queue once Pub/Sub has the copy. One
         the function still cannot handle comes back here after its retries.
    EOT
  }

  depends_on = [google_project_service.enabled]
}

# A misconfigured function (missing setting, rejected credentials) nacks every delivery,
# and its events start reaching the dead-letter queue only after max_delivery_attempts and
# their backoff: page on the first config_error line instead.
resource "google_monitoring_alert_policy" "config_error" {
  count = length(local.pubsub_functions) > 0 ? 1 : 0

  project               = var.project_id
  display_name          = "buildkite-fanout: a function reports a configuration error"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Deliveries ending in config_error"

    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"cloud_run_revision\"",
        "metric.type = \"${local.log_metric_types.deliveries}\"",
        "metric.label.outcome = \"config_error\"",
      ])
      comparison              = "COMPARISON_GT"
      threshold_value         = 0
      duration                = "0s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE" # no delivery since: no longer failing

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.function"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "buildkite-fanout: $${metric.label.function} reports a configuration error"
    content   = <<-EOT
      $${metric.label.function} answered a delivery with `config_error`: a setting is missing or
      invalid, or an API rejected its credentials (401/403). Every event it receives fails
      the same way, is retried, and reaches its dead-letter queue after
      `max_delivery_attempts`. Nothing is lost while the cause is fixed.

      1. Find the reason: Logs Explorer, `resource.type="cloud_run_revision"
         resource.labels.service_name="$${metric.label.function}" jsonPayload.outcome="config_error"`;
         the message names the variable or the API's answer.
      2. Fix the manifest's env (`terraform apply`) or the secret (`gcloud secrets versions add
         <function>-<variable> --data-file=-`, then `make deploy-<function>` so that new
         instances read it).
      3. Events still in retry are delivered again on their own; replay those already
         dead-lettered: `PROJECT=<project> make replay FUNCTION=$${metric.label.function}`.
    EOT
  }

  # An alert on a log-based metric can be created only once the metric exists.
  depends_on = [google_logging_metric.deliveries]
}

# Buildkite does not retry a webhook: each 5xx from the ingress is an event lost.
resource "google_monitoring_alert_policy" "ingress_errors" {
  count = length(local.http_functions) > 0 ? 1 : 0

  project               = var.project_id
  display_name          = "buildkite-fanout: the ingress answers Buildkite with 5xx"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Ingress 5xx answers"

    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"cloud_run_revision\"",
        "metric.type = \"${local.log_metric_types.ingress_responses}\"",
        "metric.label.status = starts_with(\"5\")",
      ])
      comparison              = "COMPARISON_GT"
      threshold_value         = 0
      duration                = "0s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.status"]
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "buildkite-fanout: the ingress answered $${metric.label.status}"
    content   = <<-EOT
      The ingress answered Buildkite with HTTP $${metric.label.status}. Buildkite does not retry
      webhooks, so each such event reached no function.

      - 503 with `outcome="publish_failed"` in the ingress's log: Pub/Sub refused or timed
        out; check the topic exists and the ingress account may publish to it.
      - 503 with `outcome="config_error"`: the ingress is misconfigured (its webhook token
        secret, `PUBSUB_TOPIC`); the message names what.
      - 500, 429, 504 without a line of ours: a crash, no instance available
        (`max_instances`) or a timeout; Cloud Run's request log and the ingress's errors say which.

      Logs Explorer: `resource.type="cloud_run_revision" resource.labels.service_name="ingress"
      severity>=ERROR`. The events of those minutes never reached Pub/Sub: look their builds
      up in Buildkite.
    EOT
  }

  depends_on = [google_logging_metric.ingress_responses]
}

# An alert with no channel opens incidents nobody hears of.
check "alerts_reach_someone" {
  assert {
    condition     = length(var.notification_channels) > 0 || length(local.functions) == 0
    error_message = "notification_channels is empty: events in a dead-letter queue, a function's configuration error and the ingress's 5xx answers open incidents in Cloud Monitoring, and no one will be told. Add a channel id (projects/<project>/notificationChannels/<id>)."
  }
}
