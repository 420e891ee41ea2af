# Cloud Functions (2nd gen), one per manifest, each running as its own service account.
#
# Who owns what: Terraform owns every setting (service account, env, secrets, memory,
# timeout, instances, IAM) and deploys each function's first code from
# build/first/<name>.zip. After that the code belongs to `make deploy-<name>`, which deploys
# the same settings from the same manifest with new source; Terraform ignores the source so
# that a plan after a deploy shows no changes.

resource "google_storage_bucket_object" "bundle" {
  for_each = local.functions

  bucket = google_storage_bucket.sources.name
  name   = "${each.key}/initial.zip"
  source = "${local.bundle_dir}/${each.key}.zip"

  lifecycle {
    # The provider compares the MD5 of the file at `source` with the object's at every
    # plan, whatever ignore_changes says. So the first bundles live in build/first/, which
    # `make package` writes once and `make deploy-<name>` never touches (tests/test_package.py
    # fails if the two paths ever meet); this only keeps a moved checkout from re-uploading.
    ignore_changes = [source]
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
    runtime         = each.value.runtime
    entry_point     = each.value.entry_point
    service_account = google_service_account.build.id

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
    # Buildkite calls the ingress from the internet. Pub/Sub push from this project counts
    # as internal traffic, so the other functions accept nothing else (replays reach them
    # through Pub/Sub too).
    ingress_settings = each.value.trigger == "http" ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"

    # Cloud Functions sets LOG_EXECUTION_ID itself; declaring it avoids a permanent diff.
    environment_variables = merge({ LOG_EXECUTION_ID = "true" }, each.value.env, local.trace_env)

    dynamic "secret_environment_variables" {
      for_each = merge(each.value.secrets, {
        for variable, id in each.value.optional_secrets : variable => id if contains(var.optional_secrets, "${each.key}/${variable}")
      })
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

    # Every rule of a manifest is buildkite_events.manifest's (make package prints the same).
    precondition {
      condition     = length(each.value.problems) == 0
      error_message = "functions/${each.key}/function.yaml: ${join("; ", each.value.problems)}."
    }
    precondition {
      condition     = alltrue([for binding in each.value.iam : startswith(binding.role, "roles/") || contains(keys(local.custom_roles), trimprefix(binding.role, local.custom_role_prefix))])
      error_message = "functions/${each.key}/function.yaml: iam roles must be predefined (roles/...) or one of the custom roles terraform/iam.tf defines: ${join(", ", [for id in keys(local.custom_roles) : "projects/$${project}/roles/${id}"])}."
    }
  }

  # A function's first build and revision start with the build account's, its secrets'
  # and its own roles in place and propagated.
  depends_on = [
    google_project_service.enabled,
    time_sleep.iam_propagation,
  ]
}

# Only HTTP functions (the ingress) are public: Buildkite cannot present Google credentials,
# so the ingress authenticates each webhook by its token or HMAC signature instead. How it
# is made public is var.public_ingress: roles/run.invoker for allUsers, or (where the Domain
# Restricted Sharing policy refuses allUsers) Cloud Run's invoker IAM check turned off.
resource "google_cloud_run_v2_service_iam_member" "public" {
  for_each = var.public_ingress == "allUsers" ? local.http_functions : {}

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# google_cloudfunctions2_function has no invoker_iam_disabled (google_cloud_run_v2_service
# has, but Cloud Functions owns the function's service). Cloud Run's Admin API may update a
# Cloud Functions service, so gcloud turns the check off once the function exists; `make
# deploy-ingress` does the same after each deploy.
resource "terraform_data" "invoker_iam_check_off" {
  for_each = var.public_ingress == "invoker_iam_disabled" ? local.http_functions : {}

  triggers_replace = [google_cloudfunctions2_function.function[each.key].id]

  provisioner "local-exec" {
    command = "gcloud run services update ${each.key} --no-invoker-iam-check --project=${var.project_id} --region=${var.region} --quiet"
  }
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
