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
    subject   = "buildkite-fanout: a dead-letter queue holds events"
    content   = <<-EOT
      A function gave up on one or more Buildkite events after its retries; they wait in
      the dead-letter subscription named in this incident, for up to 7 days.

      1. Read the function's error logs to find the cause (configuration, credentials, a
         downstream outage) and fix it.
      2. Look at the messages and their last error: `PROJECT=<project> make dlq`.
      3. Replay them to that function only: `PROJECT=<project> make replay FUNCTION=<name>`
         (each is acknowledged once the function answered 2xx).
    EOT
  }

  depends_on = [google_project_service.enabled]
}

# An alert with no channel opens incidents nobody hears of.
check "dead_letter_alert_reaches_someone" {
  assert {
    condition     = length(var.notification_channels) > 0 || length(local.pubsub_functions) == 0
    error_message = "notification_channels is empty: events that land in a dead-letter queue open an incident in Cloud Monitoring, and no one will be told. Add a channel id (projects/<project>/notificationChannels/<id>)."
  }
}
