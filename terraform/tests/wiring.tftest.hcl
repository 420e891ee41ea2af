# How the manifests become resources, on fixture manifests that use every manifest feature:
# an HTTP ingress, a notifier with secrets, idempotency and its own delivery settings, a
# BigQuery writer with delivery defaults, and an archiver with an empty filter.
#
# The google provider is mocked: nothing is created, and computed values (URLs, e-mail
# addresses) are made up, differently for each resource, so wiring mistakes show.

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
  region                = "europe-west1"
  manifests_file        = "tests/fixtures/manifests.json"
  bundle_dir            = "tests/fixtures/bundles"
  bigquery_schema_dir   = "tests/fixtures/schemas"
  bigquery_views_dir    = "tests/fixtures/views"
  notification_channels = ["projects/fanout-test/notificationChannels/42"]
}

run "each_pubsub_function_gets_a_filtered_push_subscription" {
  command = apply

  assert {
    condition     = keys(google_pubsub_subscription.push) == ["chat-notify", "event-archive", "metrics-writer"]
    error_message = "Expected one push subscription per Pub/Sub function and none for the HTTP ingress, got ${jsonencode(keys(google_pubsub_subscription.push))}."
  }
  assert {
    condition     = google_pubsub_subscription.push["chat-notify"].filter == "attributes.event_type = \"build.finished\" AND attributes.build_state = \"failed\""
    error_message = "chat-notify's subscription must carry its manifest's filter, got: ${google_pubsub_subscription.push["chat-notify"].filter}"
  }
  assert {
    condition     = google_pubsub_subscription.push["metrics-writer"].filter == "hasPrefix(attributes.event_type, \"build.\") OR attributes:job_state"
    error_message = "metrics-writer's subscription must carry its manifest's filter."
  }
  assert {
    condition     = google_pubsub_subscription.push["event-archive"].filter == ""
    error_message = "An empty manifest filter must subscribe to every event."
  }
  assert {
    condition     = alltrue([for sub in google_pubsub_subscription.push : sub.topic == google_pubsub_topic.events.id])
    error_message = "Every push subscription must be on the events topic."
  }
  assert {
    condition     = google_pubsub_topic.events.name == "buildkite-events"
    error_message = "The events topic must default to buildkite-events."
  }
  assert {
    condition     = google_pubsub_subscription.push["chat-notify"].name == "buildkite-events-chat-notify"
    error_message = "Push subscriptions are named <topic>-<function>."
  }
  assert {
    condition = alltrue([
      for name, sub in google_pubsub_subscription.push :
      sub.push_config[0].push_endpoint == google_cloudfunctions2_function.function[name].service_config[0].uri
    ])
    error_message = "Each push subscription must push to its own function's URL."
  }
  assert {
    condition = alltrue([
      for name, sub in google_pubsub_subscription.push :
      sub.push_config[0].oidc_token[0].service_account_email == google_service_account.push.email &&
      sub.push_config[0].oidc_token[0].audience == google_cloudfunctions2_function.function[name].service_config[0].uri
    ])
    error_message = "Each push must carry an OIDC token of the push service account, for its function's URL."
  }
  assert {
    condition     = alltrue([for sub in google_pubsub_subscription.push : sub.expiration_policy[0].ttl == ""])
    error_message = "Push subscriptions must never expire."
  }
}

run "delivery_settings_follow_the_manifest_or_its_defaults" {
  command = apply

  assert {
    condition     = google_pubsub_subscription.push["chat-notify"].ack_deadline_seconds == 180 && google_pubsub_subscription.push["metrics-writer"].ack_deadline_seconds == 120
    error_message = "ack_deadline_seconds must come from delivery (default: the timeout rounded up to a minute, plus a minute)."
  }
  assert {
    condition = (
      google_pubsub_subscription.push["chat-notify"].retry_policy[0].minimum_backoff == "5s" &&
      google_pubsub_subscription.push["chat-notify"].retry_policy[0].maximum_backoff == "300s" &&
      google_pubsub_subscription.push["metrics-writer"].retry_policy[0].minimum_backoff == "10s" &&
      google_pubsub_subscription.push["metrics-writer"].retry_policy[0].maximum_backoff == "600s"
    )
    error_message = "The retry policy must use the manifest's backoff (default 10s to 600s)."
  }
  assert {
    condition = (
      google_pubsub_subscription.push["chat-notify"].dead_letter_policy[0].max_delivery_attempts == 7 &&
      google_pubsub_subscription.push["metrics-writer"].dead_letter_policy[0].max_delivery_attempts == 5 &&
      google_pubsub_subscription.push["event-archive"].dead_letter_policy[0].max_delivery_attempts == 10
    )
    error_message = "max_delivery_attempts must come from delivery (default 5)."
  }
}

run "each_pubsub_function_has_its_own_dead_letter_queue" {
  command = apply

  assert {
    condition = alltrue([
      for name, sub in google_pubsub_subscription.push :
      sub.dead_letter_policy[0].dead_letter_topic == google_pubsub_topic.dead_letter[name].id
    ])
    error_message = "Each subscription must dead-letter to its own function's dead-letter topic."
  }
  assert {
    condition     = google_pubsub_topic.dead_letter["chat-notify"].name == "buildkite-events-chat-notify-dead-letter"
    error_message = "Dead-letter topics are named <topic>-<function>-dead-letter."
  }
  assert {
    condition = alltrue([
      for name, sub in google_pubsub_subscription.dead_letter :
      sub.topic == google_pubsub_topic.dead_letter[name].id &&
      sub.message_retention_duration == "604800s" &&
      sub.expiration_policy[0].ttl == "" &&
      length(sub.push_config) == 0
    ])
    error_message = "Each dead-letter topic needs a pull subscription that keeps messages 7 days and never expires."
  }
  assert {
    condition     = keys(output.dead_letter_subscriptions) == ["chat-notify", "event-archive", "metrics-writer"]
    error_message = "dead_letter_subscriptions must list every Pub/Sub function."
  }
}

run "the_pubsub_service_agent_can_dead_letter_and_sign" {
  command = apply

  assert {
    condition = alltrue([
      for name, binding in google_pubsub_topic_iam_member.dead_letter_publisher :
      binding.topic == google_pubsub_topic.dead_letter[name].name &&
      binding.role == "roles/pubsub.publisher" &&
      binding.member == "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
    ]) && length(google_pubsub_topic_iam_member.dead_letter_publisher) == 3
    error_message = "The Pub/Sub service agent must be publisher on every dead-letter topic."
  }
  assert {
    condition = alltrue([
      for name, binding in google_pubsub_subscription_iam_member.dead_letter_subscriber :
      binding.subscription == google_pubsub_subscription.push[name].name &&
      binding.role == "roles/pubsub.subscriber" &&
      binding.member == "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
    ]) && length(google_pubsub_subscription_iam_member.dead_letter_subscriber) == 3
    error_message = "The Pub/Sub service agent must be subscriber on every push subscription."
  }
  assert {
    condition = (
      google_service_account_iam_member.push_token_creator.service_account_id == google_service_account.push.name &&
      google_service_account_iam_member.push_token_creator.role == "roles/iam.serviceAccountTokenCreator"
    )
    error_message = "The Pub/Sub service agent must be able to mint the push account's OIDC tokens."
  }
}

run "only_the_ingress_is_public" {
  command = apply

  assert {
    condition = alltrue([
      for name, fn in google_cloudfunctions2_function.function :
      fn.service_config[0].ingress_settings == (name == "ingress" ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY")
    ])
    error_message = "Only the ingress may take traffic from the internet; Pub/Sub-pushed functions accept internal traffic only."
  }
  assert {
    condition     = length(terraform_data.invoker_iam_check_off) == 0
    error_message = "With public_ingress = allUsers the invoker IAM check stays on."
  }

  assert {
    condition     = keys(google_cloud_run_v2_service_iam_member.public) == ["ingress"]
    error_message = "Only the HTTP ingress may be publicly invocable."
  }
  assert {
    condition = (
      google_cloud_run_v2_service_iam_member.public["ingress"].member == "allUsers" &&
      google_cloud_run_v2_service_iam_member.public["ingress"].role == "roles/run.invoker" &&
      google_cloud_run_v2_service_iam_member.public["ingress"].name == google_cloudfunctions2_function.function["ingress"].name
    )
    error_message = "The ingress needs roles/run.invoker for allUsers on its own service."
  }
  assert {
    condition = keys(google_cloud_run_v2_service_iam_member.push) == ["chat-notify", "event-archive", "metrics-writer"] && alltrue([
      for name, binding in google_cloud_run_v2_service_iam_member.push :
      binding.member == google_service_account.push.member && binding.role == "roles/run.invoker" &&
      binding.name == google_cloudfunctions2_function.function[name].name
    ])
    error_message = "Each Pub/Sub function may be invoked by the push service account only."
  }
  assert {
    condition = length([
      for member in concat(
        [for b in google_cloud_run_v2_service_iam_member.push : b.member],
        [for b in google_project_iam_member.runtime : b.member],
        [for b in google_project_iam_member.firestore : b.member],
        [for b in google_bigquery_table_iam_member.runtime : b.member],
        [for b in google_pubsub_topic_iam_member.runtime : b.member],
        [for b in google_storage_bucket_iam_member.runtime : b.member],
        [for b in google_bigquery_dataset_iam_member.runtime : b.member],
        [for b in google_secret_manager_secret_iam_member.runtime : b.member],
      ) : member if contains(["allUsers", "allAuthenticatedUsers"], member)
    ]) == 0
    error_message = "Nothing but the ingress may be granted to allUsers or allAuthenticatedUsers."
  }
}

run "an_organisation_that_refuses_allusers_gets_a_public_ingress_without_it" {
  command = plan

  variables {
    public_ingress = "invoker_iam_disabled"
  }

  assert {
    condition     = length(google_cloud_run_v2_service_iam_member.public) == 0
    error_message = "Under Domain Restricted Sharing no role may be granted to allUsers."
  }
  assert {
    condition     = keys(terraform_data.invoker_iam_check_off) == ["ingress"]
    error_message = "The ingress, and only the ingress, must have Cloud Run's invoker IAM check turned off."
  }
  assert {
    condition     = keys(google_cloud_run_v2_service_iam_member.push) == ["chat-notify", "event-archive", "metrics-writer"]
    error_message = "The Pub/Sub functions keep requiring the push account's token."
  }
}

run "functions_build_as_the_build_account_once_its_roles_have_propagated" {
  command = apply

  assert {
    condition = alltrue([
      for fn in google_cloudfunctions2_function.function : fn.build_config[0].service_account == google_service_account.build.id
    ]) && google_service_account.build.account_id == "buildkite-fanout-build"
    error_message = "Every function must build as the build service account, by its full name (projects/<p>/serviceAccounts/<email>)."
  }
  assert {
    condition = (
      jsonencode(sort([for b in google_project_iam_member.build : b.role])) == jsonencode(["roles/artifactregistry.writer", "roles/logging.logWriter", "roles/storage.objectViewer"]) &&
      alltrue([for b in google_project_iam_member.build : b.member == google_service_account.build.member])
    )
    error_message = "The build account needs to write logs, push images and read the source archives, and nothing else."
  }
  assert {
    condition     = time_sleep.iam_propagation.create_duration == "60s" && strcontains(time_sleep.iam_propagation.triggers.build_roles, "roles/logging.logWriter")
    error_message = "Functions must wait 60 s for new grants to propagate."
  }
}

run "each_runtime_account_has_exactly_its_roles" {
  command = apply

  assert {
    condition = jsonencode(output.runtime_roles["ingress"]) == jsonencode([
      "roles/pubsub.publisher on topic buildkite-events",
      "roles/secretmanager.secretAccessor on secret ingress-buildkite-webhook-token",
      "roles/secretmanager.secretAccessor on secret ingress-buildkite-webhook-token-previous",
    ])
    error_message = "ingress may only publish to the topic and read its own secrets, has: ${jsonencode(output.runtime_roles["ingress"])}"
  }
  assert {
    condition = jsonencode(output.runtime_roles["chat-notify"]) == jsonencode([
      "roles/datastore.user on database (default)",
      "roles/secretmanager.secretAccessor on secret chat-notify-chat-token",
      "roles/secretmanager.secretAccessor on secret chat-notify-signing-secret",
    ])
    error_message = "chat-notify may only use Firestore (idempotency) and read its own secrets, has: ${jsonencode(output.runtime_roles["chat-notify"])}"
  }
  assert {
    condition = jsonencode(output.runtime_roles["metrics-writer"]) == jsonencode(sort([
      "${google_project_iam_custom_role.custom["buildkiteFanoutTableWriter"].name} on table builds",
      "${google_project_iam_custom_role.custom["buildkiteFanoutTableWriter"].name} on table jobs",
      "roles/bigquery.jobUser on project",
      "roles/bigquery.metadataViewer on dataset buildkite",
    ]))
    error_message = "metrics-writer may only write rows into each table, see the dataset and run jobs, has: ${jsonencode(output.runtime_roles["metrics-writer"])}"
  }
  assert {
    condition = (
      keys(google_project_iam_custom_role.custom) == ["buildkiteFanoutTableWriter"] &&
      google_project_iam_custom_role.custom["buildkiteFanoutTableWriter"].permissions == toset(["bigquery.tables.updateData"])
    )
    error_message = "The table writer role may only stream rows in: no read, no schema change, no delete."
  }
  assert {
    condition = alltrue([
      for b in google_project_iam_member.firestore :
      b.role == "roles/datastore.user" && b.condition[0].expression == "resource.name == \"projects/fanout-test/databases/(default)\""
    ]) && length(google_project_iam_member.firestore) == 1
    error_message = "Firestore access must be limited to the (default) database by an IAM condition."
  }
  assert {
    condition = jsonencode(output.runtime_roles["event-archive"]) == jsonencode([
      "roles/storage.objectCreator on bucket fanout-test-buildkite-archive",
      "roles/storage.objectViewer on bucket fanout-test-buildkite-archive",
    ])
    error_message = "event-archive may only create and read objects in the archive bucket, has: ${jsonencode(output.runtime_roles["event-archive"])}"
  }
  assert {
    condition = alltrue([
      for name, fn in google_cloudfunctions2_function.function :
      fn.service_config[0].service_account_email == google_service_account.runtime[name].email && google_service_account.runtime[name].account_id == name
    ])
    error_message = "Each function must run as its own service account, <name>@<project>."
  }
  assert {
    condition = alltrue(flatten([
      for resource in [google_pubsub_topic_iam_member.dead_letter_publisher, google_pubsub_subscription_iam_member.dead_letter_subscriber, google_cloud_run_v2_service_iam_member.push, google_cloud_run_v2_service_iam_member.public] : [
        for binding in resource : !contains([for sa in google_service_account.runtime : sa.member], binding.member)
      ]
    ]))
    error_message = "Runtime service accounts may hold no roles beyond those in runtime_roles."
  }
}

run "functions_follow_their_manifests" {
  command = apply

  assert {
    condition = (
      google_cloudfunctions2_function.function["chat-notify"].build_config[0].runtime == "python312" &&
      google_cloudfunctions2_function.function["chat-notify"].build_config[0].entry_point == "notify_chat" &&
      google_cloudfunctions2_function.function["chat-notify"].location == "europe-west1"
    )
    error_message = "Runtime, entry point and region must come from the manifest and variables."
  }
  assert {
    condition = (
      google_cloudfunctions2_function.function["chat-notify"].service_config[0].available_memory == "512Mi" &&
      google_cloudfunctions2_function.function["chat-notify"].service_config[0].available_cpu == "1" &&
      google_cloudfunctions2_function.function["chat-notify"].service_config[0].timeout_seconds == 120 &&
      google_cloudfunctions2_function.function["chat-notify"].service_config[0].max_instance_count == 5 &&
      google_cloudfunctions2_function.function["chat-notify"].service_config[0].min_instance_count == 1 &&
      google_cloudfunctions2_function.function["chat-notify"].service_config[0].max_instance_request_concurrency == 4
    )
    error_message = "Memory, CPU, timeout and instance limits must come from the manifest's resources."
  }
  assert {
    condition = (
      google_cloudfunctions2_function.function["ingress"].service_config[0].min_instance_count == 0 &&
      google_cloudfunctions2_function.function["ingress"].service_config[0].max_instance_request_concurrency == 1
    )
    error_message = "Unset resources must take the defaults: no minimum instances, one request at a time."
  }
  assert {
    condition = google_cloudfunctions2_function.function["ingress"].service_config[0].environment_variables == tomap({
      GOOGLE_CLOUD_PROJECT = "fanout-test"
      LOG_EXECUTION_ID     = "true"
      PUBSUB_TOPIC         = "buildkite-events"
    })
    error_message = "The ingress env must have its placeholders filled in."
  }
  assert {
    condition = (
      google_cloudfunctions2_function.function["chat-notify"].service_config[0].environment_variables["REGION"] == "europe-west1" &&
      google_cloudfunctions2_function.function["chat-notify"].service_config[0].environment_variables["CHAT_CHANNEL"] == "#builds" &&
      google_cloudfunctions2_function.function["chat-notify"].service_config[0].environment_variables["STATE_COLLECTION"] == "buildkite-fanout-idempotency" &&
      google_cloudfunctions2_function.function["metrics-writer"].service_config[0].environment_variables["BIGQUERY_DATASET"] == "buildkite" &&
      google_cloudfunctions2_function.function["event-archive"].service_config[0].environment_variables["ARCHIVE_BUCKET"] == "fanout-test-buildkite-archive"
    )
    error_message = "$${region}, $${state_collection}, $${bigquery_dataset} and $${archive_bucket} must be filled in; literal values kept."
  }
  assert {
    condition = jsonencode(google_cloudfunctions2_function.function["chat-notify"].service_config[0].secret_environment_variables) == jsonencode([
      { key = "CHAT_TOKEN", project_id = "123456789012", secret = "chat-notify-chat-token", version = "latest" },
      { key = "SIGNING_SECRET", project_id = "123456789012", secret = "chat-notify-signing-secret", version = "latest" },
    ])
    error_message = "Manifest secrets must become Secret Manager env vars <function>-<variable>, latest version."
  }
  assert {
    condition     = keys(google_secret_manager_secret.secret) == ["chat-notify/CHAT_TOKEN", "chat-notify/SIGNING_SECRET", "ingress/BUILDKITE_WEBHOOK_TOKEN", "ingress/BUILDKITE_WEBHOOK_TOKEN_PREVIOUS"]
    error_message = "Each manifest secret, optional ones included, needs its own Secret Manager secret."
  }
  assert {
    condition = jsonencode(google_cloudfunctions2_function.function["ingress"].service_config[0].secret_environment_variables) == jsonencode([
      { key = "BUILDKITE_WEBHOOK_TOKEN", project_id = "123456789012", secret = "ingress-buildkite-webhook-token", version = "latest" },
    ])
    error_message = "An optional secret must not be passed to its function unless optional_secrets names it: without a version it would stop the function from starting."
  }
  assert {
    condition     = google_secret_manager_secret.secret["ingress/BUILDKITE_WEBHOOK_TOKEN"].secret_id == "ingress-buildkite-webhook-token"
    error_message = "Secret ids are <function>-<variable, lower-case, dashes>."
  }
  assert {
    condition = alltrue([
      for name, fn in google_cloudfunctions2_function.function :
      fn.build_config[0].source[0].storage_source[0].bucket == google_storage_bucket.sources.name &&
      fn.build_config[0].source[0].storage_source[0].object == "${name}/initial.zip" &&
      google_storage_bucket_object.bundle[name].source == "tests/fixtures/bundles/${name}.zip" &&
      google_storage_bucket_object.bundle[name].bucket == google_storage_bucket.sources.name
    ])
    error_message = "Each function's first code must be its bundle from `make package`."
  }
  assert {
    condition     = output.webhook_url == google_cloudfunctions2_function.function["ingress"].url
    error_message = "webhook_url must be the ingress function's URL."
  }
}

run "the_archive_bucket_is_private_and_ages_out" {
  command = apply

  assert {
    condition = (
      google_storage_bucket.archive.name == "fanout-test-buildkite-archive" &&
      google_storage_bucket.archive.uniform_bucket_level_access == true &&
      google_storage_bucket.archive.public_access_prevention == "enforced"
    )
    error_message = "The archive bucket must use uniform access and enforce public access prevention."
  }
  assert {
    condition = jsonencode([for rule in google_storage_bucket.archive.lifecycle_rule : [one(rule.action).type, one(rule.action).storage_class, one(rule.condition).age]]) == jsonencode([
      ["SetStorageClass", "NEARLINE", 30],
      ["Delete", null, 365],
    ])
    error_message = "Archived events must move to Nearline after 30 days and be deleted after the retention (365 days by default)."
  }
}

run "a_short_retention_skips_nearline" {
  command = plan

  variables {
    archive_retention_days = 14
  }

  assert {
    condition     = jsonencode([for rule in google_storage_bucket.archive.lifecycle_rule : [one(rule.action).type, one(rule.condition).age]]) == jsonencode([["Delete", 14]])
    error_message = "With a retention of 30 days or less, objects are deleted without a Nearline step."
  }
}

run "bigquery_tables_and_views_come_from_the_repository_files" {
  command = apply

  assert {
    condition     = keys(google_bigquery_table.table) == ["builds", "jobs"] && keys(google_bigquery_table.view) == ["failure_rate"]
    error_message = "Every schemas/bigquery/*.json must become a table and every queries/views/*.sql a view."
  }
  assert {
    condition = (
      [for f in jsondecode(google_bigquery_table.table["builds"].schema) : f.name] == ["build_id", "pipeline", "state", "finished_at"] &&
      google_bigquery_table.table["builds"].time_partitioning[0].field == "finished_at" &&
      google_bigquery_table.table["builds"].clustering == tolist(["pipeline", "state"]) &&
      google_bigquery_table.table["builds"].deletion_protection == true
    )
    error_message = "A schema object's fields, partitioning and clustering must reach the table."
  }
  assert {
    condition     = [for f in jsondecode(google_bigquery_table.table["jobs"].schema) : f.name] == ["job_id", "build_id", "duration_seconds"] && length(google_bigquery_table.table["jobs"].time_partitioning) == 0
    error_message = "A schema given as a plain list of fields must become an unpartitioned table."
  }
  assert {
    condition = (
      strcontains(google_bigquery_table.view["failure_rate"].view[0].query, "`fanout-test.buildkite.builds`") &&
      google_bigquery_table.view["failure_rate"].view[0].use_legacy_sql == false
    )
    error_message = "View SQL must have $${project} and $${bigquery_dataset} filled in and use standard SQL."
  }
  assert {
    condition     = output.bigquery_table_ids == { builds = "fanout-test.buildkite.builds", jobs = "fanout-test.buildkite.jobs" }
    error_message = "bigquery_table_ids must list every table as <project>.<dataset>.<table>."
  }
}

run "no_schema_files_means_no_tables" {
  command = plan

  variables {
    bigquery_schema_dir = "tests/fixtures/empty"
    bigquery_views_dir  = "tests/fixtures/does-not-exist"
  }

  assert {
    condition     = length(google_bigquery_table.table) == 0 && length(google_bigquery_table.view) == 0 && google_bigquery_dataset.events.dataset_id == "buildkite"
    error_message = "Without schema or view files there are no tables or views, only the dataset."
  }
}

run "firestore_keeps_idempotency_records_for_a_while" {
  command = apply

  assert {
    condition     = length(google_firestore_database.default) == 1 && google_firestore_database.default[0].name == "(default)" && google_firestore_database.default[0].location_id == "europe-west1"
    error_message = "A function with idempotency: true needs the (default) Firestore database."
  }
  assert {
    condition = (
      google_firestore_field.idempotency_ttl[0].collection == "buildkite-fanout-idempotency" &&
      google_firestore_field.idempotency_ttl[0].field == "expire_at" &&
      length(google_firestore_field.idempotency_ttl[0].ttl_config) == 1
    )
    error_message = "The idempotency collection needs a TTL policy on expire_at."
  }
}

run "enabled_functions_deploys_a_subset" {
  command = plan

  variables {
    enabled_functions = ["ingress", "event-archive"]
  }

  assert {
    condition     = keys(google_cloudfunctions2_function.function) == ["event-archive", "ingress"] && keys(google_pubsub_subscription.push) == ["event-archive"]
    error_message = "Only the enabled functions may be deployed."
  }
  assert {
    condition     = length(google_firestore_database.default) == 0 && length(google_firestore_field.idempotency_ttl) == 0
    error_message = "Without a function that needs idempotency there is no Firestore database."
  }
  assert {
    condition     = strcontains(google_monitoring_alert_policy.dead_letter_backlog[0].conditions[0].condition_threshold[0].filter, "one_of(\"buildkite-events-event-archive-dead-letter\")")
    error_message = "The alert must watch exactly the enabled functions' dead-letter subscriptions."
  }
}

run "an_existing_firestore_database_is_left_alone" {
  command = plan

  variables {
    create_firestore_database = false
  }

  assert {
    condition     = length(google_firestore_database.default) == 0 && length(google_firestore_field.idempotency_ttl) == 1
    error_message = "With create_firestore_database = false only the TTL policy is managed."
  }
}

run "replays_reach_one_function_through_its_own_topic" {
  command = apply

  assert {
    condition = keys(google_pubsub_topic.replay) == keys(google_pubsub_subscription.push) && alltrue([
      for name, sub in google_pubsub_subscription.replay :
      sub.topic == google_pubsub_topic.replay[name].id &&
      sub.name == "buildkite-events-${name}-replay" &&
      sub.filter == null &&
      sub.push_config[0].push_endpoint == google_cloudfunctions2_function.function[name].service_config[0].uri &&
      sub.push_config[0].oidc_token[0].service_account_email == google_service_account.push.email &&
      sub.push_config[0].oidc_token[0].audience == google_pubsub_subscription.push[name].push_config[0].oidc_token[0].audience
    ])
    error_message = "Each Pub/Sub function needs a replay topic whose subscription pushes to that function, with the push account's token."
  }
  assert {
    condition = length(distinct([for sub in google_pubsub_subscription.replay : sub.topic])) == length(google_pubsub_subscription.replay) && alltrue([
      for sub in google_pubsub_subscription.push : !contains([for topic in google_pubsub_topic.replay : topic.id], sub.topic)
    ])
    error_message = "No other subscription may read a replay topic: no other function sees a replayed event."
  }
  assert {
    condition = alltrue([
      for name, sub in google_pubsub_subscription.replay :
      sub.dead_letter_policy[0].dead_letter_topic == google_pubsub_topic.dead_letter[name].id &&
      sub.dead_letter_policy[0].max_delivery_attempts == google_pubsub_subscription.push[name].dead_letter_policy[0].max_delivery_attempts &&
      sub.ack_deadline_seconds == google_pubsub_subscription.push[name].ack_deadline_seconds &&
      sub.retry_policy[0].maximum_backoff == google_pubsub_subscription.push[name].retry_policy[0].maximum_backoff &&
      google_pubsub_subscription_iam_member.replay_dead_letter_subscriber[name].subscription == sub.name &&
      google_pubsub_subscription_iam_member.replay_dead_letter_subscriber[name].role == "roles/pubsub.subscriber"
    ])
    error_message = "A replay that fails again must go back to the function's dead-letter queue, after the same retries."
  }
  assert {
    condition     = output.replay_topics["chat-notify"] == google_pubsub_topic.replay["chat-notify"].id
    error_message = "replay_topics must list each replay topic."
  }
}

run "a_dead_letter_backlog_raises_an_alert" {
  command = apply

  assert {
    condition = google_monitoring_alert_policy.dead_letter_backlog[0].conditions[0].condition_threshold[0].filter == join(" AND ", [
      "resource.type = \"pubsub_subscription\"",
      "metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\"",
      "resource.label.subscription_id = one_of(\"buildkite-events-chat-notify-dead-letter\", \"buildkite-events-event-archive-dead-letter\", \"buildkite-events-metrics-writer-dead-letter\")",
    ])
    error_message = "The alert must watch the undelivered messages of every dead-letter subscription."
  }
  assert {
    condition = (
      google_monitoring_alert_policy.dead_letter_backlog[0].conditions[0].condition_threshold[0].comparison == "COMPARISON_GT" &&
      google_monitoring_alert_policy.dead_letter_backlog[0].conditions[0].condition_threshold[0].threshold_value == 0 &&
      google_monitoring_alert_policy.dead_letter_backlog[0].conditions[0].condition_threshold[0].duration == "300s" &&
      google_monitoring_alert_policy.dead_letter_backlog[0].notification_channels == tolist(["projects/fanout-test/notificationChannels/42"])
    )
    error_message = "The alert must open when a dead-letter queue has held any message for 5 minutes, and notify the given channels."
  }
}

run "an_optional_secret_is_passed_once_named" {
  command = apply

  variables {
    optional_secrets = ["ingress/BUILDKITE_WEBHOOK_TOKEN_PREVIOUS"]
  }

  assert {
    condition = jsonencode(google_cloudfunctions2_function.function["ingress"].service_config[0].secret_environment_variables) == jsonencode([
      { key = "BUILDKITE_WEBHOOK_TOKEN", project_id = "123456789012", secret = "ingress-buildkite-webhook-token", version = "latest" },
      { key = "BUILDKITE_WEBHOOK_TOKEN_PREVIOUS", project_id = "123456789012", secret = "ingress-buildkite-webhook-token-previous", version = "latest" },
    ])
    error_message = "A named optional secret must become a Secret Manager env var like the required ones."
  }
}

run "only_declared_optional_secrets_may_be_named" {
  command = plan

  variables {
    optional_secrets = ["ingress/BUILDKITE_WEBHOOK_TOKEN_NEXT"]
  }

  expect_failures = [var.optional_secrets]
}

run "no_trace_export_by_default" {
  command = apply

  assert {
    condition = alltrue([
      for fn in google_cloudfunctions2_function.function :
      !contains(keys(fn.service_config[0].environment_variables), "TRACE_EXPORTER")
    ])
    error_message = "Without trace_exporter no function is told to export spans."
  }
  assert {
    condition     = !contains(keys(google_project_service.enabled), "cloudtrace.googleapis.com")
    error_message = "Without trace_exporter = \"gcp\" the Cloud Trace API stays as it was."
  }
}

run "cloud_trace_export_sets_every_function_up_for_it" {
  command = apply

  variables {
    trace_exporter = "gcp"
  }

  assert {
    condition = alltrue([
      for fn in google_cloudfunctions2_function.function : fn.service_config[0].environment_variables["TRACE_EXPORTER"] == "gcp"
    ])
    error_message = "Every function must be told to export to Cloud Trace."
  }
  assert {
    condition     = alltrue([for name, roles in output.runtime_roles : contains(roles, "roles/cloudtrace.agent on project")])
    error_message = "Every function's account must be able to write spans: ${jsonencode(output.runtime_roles)}"
  }
  assert {
    condition     = jsonencode(output.runtime_roles["event-archive"]) == jsonencode(["roles/cloudtrace.agent on project", "roles/storage.objectCreator on bucket fanout-test-buildkite-archive", "roles/storage.objectViewer on bucket fanout-test-buildkite-archive"])
    error_message = "Cloud Trace's agent role is the only role tracing adds: ${jsonencode(output.runtime_roles["event-archive"])}"
  }
  assert {
    condition     = contains(keys(google_project_service.enabled), "cloudtrace.googleapis.com")
    error_message = "Exporting to Cloud Trace enables its API."
  }
}

run "otlp_export_points_every_function_at_the_collector" {
  command = apply

  variables {
    trace_exporter      = "otlp"
    trace_otlp_endpoint = "http://otel-collector.internal:4318"
  }

  assert {
    condition = alltrue([
      for fn in google_cloudfunctions2_function.function :
      fn.service_config[0].environment_variables["TRACE_EXPORTER"] == "otlp" &&
      fn.service_config[0].environment_variables["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.internal:4318"
    ])
    error_message = "Every function must export to the collector."
  }
  assert {
    condition     = alltrue([for name, roles in output.runtime_roles : !contains(roles, "roles/cloudtrace.agent on project")])
    error_message = "Only Cloud Trace export grants Cloud Trace's agent role."
  }
}
