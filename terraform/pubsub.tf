# One shared topic; per Pub/Sub function a filtered push subscription with its own retry
# policy and dead-letter queue (a topic plus a pull subscription to inspect and replay from).

locals {
  dead_letter_names = { for name in keys(local.pubsub_functions) : name => "${var.topic_name}-${name}-dead-letter" }

  # A lexical check of each filter, so that a typo fails the plan instead of the API call:
  # string literals, attribute references, hasPrefix(, AND/OR/NOT, = != : , ( ) and -
  # are the only tokens Pub/Sub's filter syntax has. The Python tests parse every filter
  # fully with buildkite_events.filters.parse_filter.
  filter_strings = {
    for name, fn in local.pubsub_functions : name => replace(fn.filter, "/\"(?:[^\"\\\\]|\\\\.)*\"/", "§")
  }
  filter_leftovers = {
    for name, text in local.filter_strings : name => replace(
      text,
      "/attributes\\.(?:[A-Za-z0-9_-]+|§)|attributes:(?:[A-Za-z0-9_-]+|§)|hasPrefix\\(|\\b(?:AND|OR|NOT)\\b|!=|[=,()§-]|\\s+/",
      ""
    )
  }
  filter_valid = {
    for name, text in local.filter_strings : name => (
      length(local.pubsub_functions[name].filter) <= 256 &&
      local.filter_leftovers[name] == "" &&
      !strcontains(text, "==") &&
      length(regexall("\\(", text)) == length(regexall("\\)", text))
    )
  }
}

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
  name    = local.dead_letter_names[each.key]
  labels  = merge(local.labels, { function = each.key })

  depends_on = [google_project_service.enabled]
}

# Where an operator looks at, and replays, what a function could not handle.
resource "google_pubsub_subscription" "dead_letter" {
  for_each = local.pubsub_functions

  project = var.project_id
  name    = local.dead_letter_names[each.key]
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
  name    = "${var.topic_name}-${each.key}"
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

  lifecycle {
    precondition {
      condition     = local.filter_valid[each.key]
      error_message = "functions/${each.key}/function.yaml: filter is not a valid Pub/Sub subscription filter (at most 256 characters of conditions such as attributes.event_type = \"build.finished\" or hasPrefix(attributes.branch, \"release/\"), joined by AND / OR / NOT, with balanced parentheses and double-quoted strings): ${each.value.filter}"
    }
    precondition {
      condition     = each.value.delivery.min_backoff_seconds <= each.value.delivery.max_backoff_seconds
      error_message = "functions/${each.key}/function.yaml: delivery.min_backoff_seconds (${each.value.delivery.min_backoff_seconds}) must not exceed max_backoff_seconds (${each.value.delivery.max_backoff_seconds})."
    }
    precondition {
      condition     = each.value.delivery.ack_deadline_seconds >= local.min_ack_deadline[each.key]
      error_message = "functions/${each.key}/function.yaml: delivery.ack_deadline_seconds (${each.value.delivery.ack_deadline_seconds}) must be at least ${local.min_ack_deadline[each.key]}: the timeout (${each.value.timeout_seconds} s) rounded up to a whole minute, plus a minute. Pub/Sub redelivers a push it has not had an answer to by the deadline, while the first call still runs."
    }
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
  name    = "${var.topic_name}-${each.key}-replay"
  labels  = merge(local.labels, { function = each.key, delivery = "replay" })

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_subscription" "replay" {
  for_each = local.pubsub_functions

  project = var.project_id
  name    = "${var.topic_name}-${each.key}-replay"
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
