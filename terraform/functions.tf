# Cloud Functions (2nd gen), one per manifest, each running as its own service account.
#
# Who owns what: Terraform owns every setting (service account, env, secrets, memory,
# timeout, instances, IAM) and deploys each function's first code from build/<name>.zip.
# After that the code belongs to `make deploy-<name>`, which deploys the same settings from
# the same manifest with new source; Terraform ignores the source so that a plan after a
# deploy shows no changes.

resource "google_storage_bucket_object" "bundle" {
  for_each = local.functions

  bucket = google_storage_bucket.sources.name
  name   = "${each.key}/initial.zip"
  source = "${local.bundle_dir}/${each.key}.zip"

  lifecycle {
    # Rebuilding the bundle for `make deploy-<name>` must not make Terraform upload it again.
    ignore_changes = [detect_md5hash, source]
  }
}

resource "google_cloudfunctions2_function" "function" {
  # checkov:skip=CKV_GCP_124: Buildkite and Pub/Sub push both call from outside the VPC; run.invoker IAM and the ingress's token or signature check guard the functions
  for_each = local.functions

  project     = var.project_id
  location    = var.region
  name        = each.key
  description = each.value.description
  labels      = merge(local.labels, { function = each.key })

  build_config {
    runtime     = each.value.runtime
    entry_point = each.value.entry_point

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.bundle[each.key].name
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    timeout_seconds                  = each.value.timeout_seconds
    max_instance_count               = each.value.max_instances
    min_instance_count               = each.value.min_instances
    max_instance_request_concurrency = each.value.concurrency
    service_account_email            = google_service_account.runtime[each.key].email
    all_traffic_on_latest_revision   = true
    # Pub/Sub push and Buildkite both arrive from outside the VPC; invoker IAM guards the
    # Pub/Sub functions and the ingress checks Buildkite's token or signature.
    ingress_settings = "ALLOW_ALL"

    # Cloud Functions sets LOG_EXECUTION_ID itself; declaring it avoids a permanent diff.
    environment_variables = merge({ LOG_EXECUTION_ID = "true" }, each.value.env)

    dynamic "secret_environment_variables" {
      for_each = each.value.secrets
      content {
        key        = secret_environment_variables.key
        project_id = data.google_project.this.number
        secret     = google_secret_manager_secret.secret["${each.key}/${secret_environment_variables.key}"].secret_id
        version    = "latest"
      }
    }
  }

  lifecycle {
    # Code deployed by `make deploy-<name>` lives in gcloud's own upload bucket.
    ignore_changes = [build_config[0].source]

    precondition {
      condition     = each.value.declared_name == each.key
      error_message = "functions/${each.key}/function.yaml says name: \"${each.value.declared_name}\"; a manifest's name must equal its folder name."
    }
    precondition {
      condition     = contains(["http", "pubsub"], each.value.trigger)
      error_message = "functions/${each.key}/function.yaml: trigger must be http or pubsub, not \"${each.value.trigger}\"."
    }
    precondition {
      condition     = alltrue([for value in values(each.value.env) : !can(regex("\\$\\{", value))])
      error_message = "functions/${each.key}/function.yaml: env uses a placeholder Terraform does not know (${join(", ", [for key, value in each.value.env : key if can(regex("\\$\\{", value))])}); the known ones are $${project}, $${region}, $${topic}, $${archive_bucket}, $${bigquery_dataset} and $${state_collection}."
    }
    precondition {
      condition     = alltrue([for binding in each.value.iam : contains(["project", "topic", "archive_bucket", "bigquery_dataset", "own_secrets"], binding.scope)])
      error_message = "functions/${each.key}/function.yaml: iam entries may grant roles on project, topic, archive_bucket, bigquery_dataset or own_secrets only."
    }
  }

  # A function's first revision starts with its secrets and roles in place.
  depends_on = [
    google_project_service.enabled,
    google_secret_manager_secret_iam_member.runtime,
    google_project_iam_member.runtime,
  ]
}

# Only HTTP functions (the ingress) are public: Buildkite cannot present Google credentials,
# so the ingress authenticates each webhook by its token or HMAC signature instead.
resource "google_cloud_run_v2_service_iam_member" "public" {
  for_each = local.http_functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Pub/Sub functions accept only the push service account's OIDC tokens.
resource "google_cloud_run_v2_service_iam_member" "push" {
  for_each = local.pubsub_functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.push.member
}
