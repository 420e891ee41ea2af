# Service accounts and the roles they hold. Each function runs as its own account with only
# the roles its manifest lists, plus those it always needs: access to its own secrets,
# Firestore when its manifest declares state, and Cloud Trace's agent role when
# var.trace_exporter is "gcp". Builds run as one build account.

locals {
  # "<function> <target> <role>" -> binding, for targets other than the function's secrets.
  runtime_bindings = merge([
    for name, fn in local.functions : merge(
      { for b in fn.iam : "${name} ${b.scope} ${b.role}" => { function = name, scope = b.scope, role = b.role } if b.scope != "own_secrets" },
      { for role in fn.firestore ? ["roles/datastore.user"] : [] : "${name} firestore ${role}" => { function = name, scope = "firestore", role = role } },
      { for role in var.trace_exporter == "gcp" ? ["roles/cloudtrace.agent"] : [] : "${name} project ${role}" => { function = name, scope = "project", role = role } },
    )
  ]...)

  # "<function> <VARIABLE> <role>" -> binding on that one secret.
  secret_bindings = merge([
    for name, fn in local.functions : {
      for pair in setproduct(keys(merge(fn.secrets, fn.optional_secrets)), distinct(concat(
        ["roles/secretmanager.secretAccessor"],
        [for b in fn.iam : b.role if b.scope == "own_secrets"],
      ))) :
      "${name} ${pair[0]} ${pair[1]}" => { function = name, variable = pair[0], role = pair[1] }
    }
  ]...)

  # "<function> <table> <role>" -> binding on one table, for the bigquery_tables scope.
  table_bindings = merge([
    for key, b in local.runtime_bindings : {
      for table in keys(local.bigquery_tables) : "${b.function} ${table} ${b.role}" => merge(b, { table = table })
    } if b.scope == "bigquery_tables"
  ]...)

  # Roles narrower than any predefined one. A manifest names one as
  # projects/$${project}/roles/<id>; Terraform creates those some manifest uses.
  custom_roles = {
    buildkiteFanoutTableWriter = {
      title       = "buildkite-fanout BigQuery table writer"
      description = "Stream rows into a table (tabledata.insertAll); cannot read, alter or delete it."
      permissions = ["bigquery.tables.updateData"]
    }
  }
  custom_role_prefix = "projects/${var.project_id}/roles/"
  used_custom_roles = toset([
    for b in concat(values(local.runtime_bindings), values(local.secret_bindings)) :
    trimprefix(b.role, local.custom_role_prefix) if startswith(b.role, local.custom_role_prefix)
  ])

  # A manifest role as IAM takes it: custom roles by their full name, created first. An
  # unknown custom role stays as written, and the function's precondition names it.
  iam_role = {
    for role in distinct([for b in concat(values(local.runtime_bindings), values(local.secret_bindings)) : b.role]) :
    role => try(google_project_iam_custom_role.custom[trimprefix(role, local.custom_role_prefix)].name, role)
  }

  # What Cloud Build needs to build a function from source as the build account: write
  # build logs, push the image to Artifact Registry (gcf-artifacts), and read the source
  # archives (Terraform's first bundles and the ones gcloud uploads to its gcf-v2-sources
  # bucket, whose name Google chooses: hence the project).
  build_roles = toset([
    "roles/artifactregistry.writer",
    "roles/logging.logWriter",
    "roles/storage.objectViewer",
  ])
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

# Cloud Build builds every function as this account (build_config.service_account, and
# `make deploy-<name>` passes --build-service-account): since mid-2024 a new project's
# default build account may lack the roles to build a function.
resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "buildkite-fanout-build"
  display_name = "buildkite-fanout function builds"
  description  = "Cloud Build runs the buildkite-fanout function builds as this account."

  depends_on = [google_project_service.enabled]
}

resource "google_project_iam_member" "build" {
  for_each = local.build_roles

  project = var.project_id
  role    = each.value
  member  = google_service_account.build.member
}

# New grants take a while to reach the services that check them; a build or a first
# revision started at once can fail on them (the provider's "cloudfunctions2 basic
# builder" example waits 60 s the same way).
resource "time_sleep" "iam_propagation" {
  create_duration = var.iam_propagation_wait

  triggers = {
    build_roles   = join(",", sort([for b in google_project_iam_member.build : b.role]))
    runtime_roles = join(",", sort(keys(local.runtime_bindings)))
    secret_roles  = join(",", sort(keys(local.secret_bindings)))
  }

  depends_on = [
    google_project_iam_member.build,
    google_project_iam_member.runtime,
    google_project_iam_member.firestore,
    google_secret_manager_secret_iam_member.runtime,
  ]
}

resource "google_project_iam_custom_role" "custom" {
  for_each = { for id, role in local.custom_roles : id => role if contains(local.used_custom_roles, id) }

  project     = var.project_id
  role_id     = each.key
  title       = each.value.title
  description = each.value.description
  permissions = each.value.permissions
}

resource "google_project_iam_member" "runtime" {
  for_each = { for key, b in local.runtime_bindings : key => b if b.scope == "project" }

  project = var.project_id
  role    = local.iam_role[each.value.role]
  member  = google_service_account.runtime[each.value.function].member
}

# Firestore access for idempotency claims, on the (default) database only: other
# databases in the project stay out of reach.
resource "google_project_iam_member" "firestore" {
  for_each = { for key, b in local.runtime_bindings : key => b if b.scope == "firestore" }

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.runtime[each.value.function].member

  condition {
    title       = "buildkite-fanout-firestore-default"
    description = "Only the (default) Firestore database, where idempotency records live."
    expression  = "resource.name == \"projects/${var.project_id}/databases/(default)\""
  }
}

resource "google_pubsub_topic_iam_member" "runtime" {
  for_each = { for key, b in local.runtime_bindings : key => b if b.scope == "topic" }

  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = local.iam_role[each.value.role]
  member  = google_service_account.runtime[each.value.function].member
}

resource "google_storage_bucket_iam_member" "runtime" {
  for_each = { for key, b in local.runtime_bindings : key => b if b.scope == "archive_bucket" }

  bucket = google_storage_bucket.archive.name
  role   = local.iam_role[each.value.role]
  member = google_service_account.runtime[each.value.function].member
}

resource "google_bigquery_dataset_iam_member" "runtime" {
  for_each = { for key, b in local.runtime_bindings : key => b if b.scope == "bigquery_dataset" }

  project    = var.project_id
  dataset_id = google_bigquery_dataset.events.dataset_id
  role       = local.iam_role[each.value.role]
  member     = google_service_account.runtime[each.value.function].member
}

# scope bigquery_tables: the role on each table from schemas/bigquery (not on views, and
# not on the dataset, so the function can neither create nor drop tables).
resource "google_bigquery_table_iam_member" "runtime" {
  for_each = local.table_bindings

  project    = var.project_id
  dataset_id = google_bigquery_dataset.events.dataset_id
  table_id   = google_bigquery_table.table[each.value.table].table_id
  role       = local.iam_role[each.value.role]
  member     = google_service_account.runtime[each.value.function].member
}

resource "google_secret_manager_secret_iam_member" "runtime" {
  for_each = local.secret_bindings

  project   = var.project_id
  secret_id = google_secret_manager_secret.secret["${each.value.function}/${each.value.variable}"].secret_id
  role      = local.iam_role[each.value.role]
  member    = google_service_account.runtime[each.value.function].member
}

# The Pub/Sub service agent needs: publisher on each dead-letter topic and subscriber on
# each push subscription (to move undeliverable messages), and token creator on the push
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

  lifecycle {
    # A changed filter replaces the subscription under the same name; a grant on the old
    # one would be gone with it while Terraform still counts it as there, and dead-lettering
    # would stop without a word. Re-create the grant with the subscription.
    replace_triggered_by = [google_pubsub_subscription.push[each.key]]
  }
}

resource "google_pubsub_subscription_iam_member" "replay_dead_letter_subscriber" {
  for_each = local.pubsub_functions

  project      = var.project_id
  subscription = google_pubsub_subscription.replay[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent

  lifecycle {
    replace_triggered_by = [google_pubsub_subscription.replay[each.key]]
  }
}

resource "google_service_account_iam_member" "push_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}
