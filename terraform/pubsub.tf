# One shared topic; per Pub/Sub function a filtered push subscription with its own retry
# policy and dead-letter queue (a topic plus a pull subscription to inspect and replay from).

resource "google_pubsub_topic" "events" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption; the events carry build metadata, and webhook secrets never reach the topic
  project = var.project_id
  name    = var.topic_name
  labels  = local.labels

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption, as for the events topic
  for_each = local.pubsub_functions

  project = var.project_id
  name    = each.value.dead_letter
  labels  = merge(local.labels, { function = each.key })

  depends_on = [google_project_service.enabled]
}

# Where an operator looks at, and replays, what a function could not handle.
resource "google_pubsub_subscription" "dead_letter" {
  for_each = local.pubsub_functions

  project = var.project_id
  name    = each.value.dead_letter
  topic   = google_pubsub_topic.dead_letter[each.key].id
  labels  = merge(local.labels, { function = each.key })

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s" # 7 days, the longest Pub/Sub keeps unacked messages
  retain_acked_messages      = false

  expiration_policy {
    ttl = "" # never expire, however long the queue stays empty
  }
}

resource "google_pubsub_subscription" "push" {
  for_each = local.pubsub_functions

  project = var.project_id
  name    = each.value.subscription
  topic   = google_pubsub_topic.events.id
  labels  = merge(local.labels, { function = each.key })

  # Changing a filter replaces the subscription (Pub/Sub filters are immutable); the
  # service agent's grant on it is replaced with it (iam.tf).
  filter               = each.value.filter
  ack_deadline_seconds = each.value.delivery.ack_deadline_seconds

  retry_policy {
    minimum_backoff = "${each.value.delivery.min_backoff_seconds}s"
    maximum_backoff = "${each.value.delivery.max_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = each.value.delivery.max_delivery_attempts
  }

  push_config {
    push_endpoint = google_cloudfunctions2_function.function[each.key].service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = google_cloudfunctions2_function.function[each.key].service_config[0].uri
    }
  }

  expiration_policy {
    ttl = "" # a quiet week must not delete the subscription
  }

  depends_on = [
    # Dead-lettering needs these grants; without them Pub/Sub silently retries forever.
    google_pubsub_topic_iam_member.dead_letter_publisher,
    google_service_account_iam_member.push_token_creator,
  ]
}

# `make replay FUNCTION=<name>` publishes a dead-lettered event to <topic>-<name>-replay,
# whose one push subscription delivers it to that function only, with the same token,
# retries and dead-letter queue as the function's own subscription. (The functions accept
# internal traffic only, so a replay cannot call them from a workstation.)
resource "google_pubsub_topic" "replay" {
  # checkov:skip=CKV_GCP_83: Google-managed encryption, as for the events topic
  for_each = local.pubsub_functions

  project = var.project_id
  name    = each.value.replay
  labels  = merge(local.labels, { function = each.key, delivery = "replay" })

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_subscription" "replay" {
  for_each = local.pubsub_functions

  project = var.project_id
  name    = each.value.replay
  topic   = google_pubsub_topic.replay[each.key].id
  labels  = merge(local.labels, { function = each.key, delivery = "replay" })

  ack_deadline_seconds = each.value.delivery.ack_deadline_seconds

  retry_policy {
    minimum_backoff = "${each.value.delivery.min_backoff_seconds}s"
    maximum_backoff = "${each.value.delivery.max_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = each.value.delivery.max_delivery_attempts
  }

  push_config {
    push_endpoint = google_cloudfunctions2_function.function[each.key].service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = google_cloudfunctions2_function.function[each.key].service_config[0].uri
    }
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_pubsub_topic_iam_member.dead_letter_publisher,
    google_service_account_iam_member.push_token_creator,
  ]
}
