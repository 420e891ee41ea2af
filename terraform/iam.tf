# Service accounts and the roles they hold. Each function runs as its own account with only
# the roles its manifest lists, plus two it always needs: access to its own secrets, and
# Firestore when its manifest declares state.

locals {
  # "<function> <target> <role>" -> binding, for targets other than the function's secrets.
  runtime_bindings = merge([
    for name, fn in local.functions : merge(
      { for b in fn.iam : "${name} ${b.scope} ${b.role}" => { function = name, scope = b.scope, role = b.role } if b.scope != "own_secrets" },
      { for role in fn.firestore ? ["roles/datastore.user"] : [] : "${name} project ${role}" => { function = name, scope = "project", role = role } },
    )
  ]...)

  # "<function> <VARIABLE> <role>" -> binding on that one secret.
  secret_bindings = merge([
    for name, fn in local.functions : {
      for pair in setproduct(keys(fn.secrets), distinct(concat(
        ["roles/secretmanager.secretAccessor"],
        [for b in fn.iam : b.role if b.scope == "own_secrets"],
      ))) :
      "${name} ${pair[0]} ${pair[1]}" => { function = name, variable = pair[0], role = pair[1] }
    }
  ]...)
}

resource "google_service_account" "runtime" {
  for_each = local.functions

  project      = var.project_id
  account_id   = each.key # `make deploy-<name>` runs the function as <name>@<project>.iam.gserviceaccount.com
  display_name = "buildkite-fanout ${each.key}"
  description  = "Runs the ${each.key} function; holds only the roles functions/${each.key}/function.yaml asks for."

  lifecycle {
    precondition {
      condition     = length(each.key) >= 6 && length(each.key) <= 30
      error_message = "Function \"${each.key}\": its name is also its service account id, which must be 6 to 30 characters long."
    }
  }

  depends_on = [google_project_service.enabled]
}

# Pub/Sub signs each push with an OIDC token for this account; only it may invoke the
# Pub/Sub functions.
resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "buildkite-fanout-push"
  display_name = "buildkite-fanout Pub/Sub push"
  description  = "Identity of Pub/Sub push deliveries to the buildkite-fanout functions."

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "runtime" {
  for_each = { for key, b in local.runtime_bindings : key => b if b.scope == "project" }

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.runtime[each.value.function].member
}

resource "google_pubsub_topic_iam_member" "runtime" {
  for_each = { for key, b in local.runtime_bindings : key => b if b.scope == "topic" }

  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = each.value.role
  member  = google_service_account.runtime[each.value.function].member
}

resource "google_storage_bucket_iam_member" "runtime" {
  for_each = { for key, b in local.runtime_bindings : key => b if b.scope == "archive_bucket" }

  bucket = google_storage_bucket.archive.name
  role   = each.value.role
  member = google_service_account.runtime[each.value.function].member
}

resource "google_bigquery_dataset_iam_member" "runtime" {
  for_each = { for key, b in local.runtime_bindings : key => b if b.scope == "bigquery_dataset" }

  project    = var.project_id
  dataset_id = google_bigquery_dataset.events.dataset_id
  role       = each.value.role
  member     = google_service_account.runtime[each.value.function].member
}

resource "google_secret_manager_secret_iam_member" "runtime" {
  for_each = local.secret_bindings

  project   = var.project_id
  secret_id = google_secret_manager_secret.secret["${each.value.function}/${each.value.variable}"].secret_id
  role      = each.value.role
  member    = google_service_account.runtime[each.value.function].member
}

# The Pub/Sub service agent needs: publisher on each dead-letter topic and subscriber on
# each source subscription (to move undeliverable messages), and token creator on the push
# account (to sign the OIDC tokens; needed in projects created before April 2021).
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.pubsub_functions

  project = var.project_id
  topic   = google_pubsub_topic.dead_letter[each.key].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = local.pubsub_functions

  project      = var.project_id
  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

resource "google_service_account_iam_member" "push_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}
