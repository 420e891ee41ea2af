# A changed filter replaces a push subscription under the same name (Pub/Sub filters are
# immutable). The Pub/Sub service agent's grant on it must be replaced with it, or
# dead-lettering stops while Terraform believes the grant is there.
#
# The mock provider does not know which changes force a replacement; it updates the
# subscription in place, and replace_triggered_by replaces the grant on any planned change
# to its subscription. So this proves the dependency; that Pub/Sub replaces the
# subscription on a filter change is the provider's (its filter is ForceNew).

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

run "before_the_filter_changes" {
  command = apply

  # Mark the grants as they are now: a grant that is re-created gets a fresh etag.
  override_resource {
    target = google_pubsub_subscription_iam_member.dead_letter_subscriber
    values = {
      etag = "granted-before"
    }
  }

  assert {
    condition     = alltrue([for grant in google_pubsub_subscription_iam_member.dead_letter_subscriber : grant.etag == "granted-before"])
    error_message = "Every push subscription needs the service agent's subscriber grant."
  }
}

run "the_grant_is_replaced_with_its_subscription" {
  command = apply

  variables {
    manifests_file = "tests/fixtures/new-filter/manifests.json"
  }

  assert {
    condition     = google_pubsub_subscription.push["chat-notify"].filter == "attributes.event_type = \"build.finished\" AND attributes.build_state != \"passed\""
    error_message = "The subscription must carry the new filter."
  }
  assert {
    condition     = google_pubsub_subscription_iam_member.dead_letter_subscriber["chat-notify"].etag != "granted-before"
    error_message = "The service agent's grant on chat-notify's subscription must be re-created when the subscription changes."
  }
  assert {
    condition = alltrue([
      for name in ["event-archive", "metrics-writer"] : google_pubsub_subscription_iam_member.dead_letter_subscriber[name].etag == "granted-before"
    ])
    error_message = "Grants on unchanged subscriptions must be left alone."
  }
}
