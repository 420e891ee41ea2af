# Everything below is driven by the function manifests: adding functions/<name>/function.yaml
# adds that function's service account, secrets, function, subscription and dead-letter
# queue with no edit here. shared/buildkite_events/manifest.schema.json documents each key.

locals {
  functions_dir       = coalesce(var.functions_dir, "${path.module}/../functions")
  bundle_dir          = coalesce(var.bundle_dir, "${path.module}/../build/first")
  bigquery_schema_dir = coalesce(var.bigquery_schema_dir, "${path.module}/../schemas/bigquery")
  bigquery_views_dir  = coalesce(var.bigquery_views_dir, "${path.module}/../queries/views")

  archive_bucket_name = coalesce(var.archive_bucket_name, "${var.project_id}-buildkite-archive")
  source_bucket_name  = coalesce(var.source_bucket_name, "${var.project_id}-buildkite-fanout-sources")
  bucket_location     = upper(var.region)
  bigquery_location   = coalesce(var.bigquery_location, var.region)
  firestore_location  = coalesce(var.firestore_location, var.region)

  labels = merge({ app = "buildkite-fanout" }, var.labels)

  # The folder name is the function's name; the manifest's own name must agree (checked
  # on the function resource).
  manifests = {
    for path in fileset(local.functions_dir, "*/function.yaml") :
    dirname(path) => yamldecode(file("${local.functions_dir}/${path}"))
  }

  enabled_names = var.enabled_functions == null ? keys(local.manifests) : [
    for name in distinct(var.enabled_functions) : name if contains(keys(local.manifests), name)
  ]

  # One normalised object per enabled function. Optional keys get the defaults of
  # buildkite_events.manifest; a malformed entry fails here rather than deploying half.
  functions = {
    for name in local.enabled_names : name => {
      declared_name = try(tostring(local.manifests[name].name), "")
      description   = try(tostring(local.manifests[name].description), "")
      trigger       = try(tostring(local.manifests[name].trigger), "")
      runtime       = try(tostring(local.manifests[name].runtime), "python312")
      entry_point   = local.manifests[name].entry_point
      filter        = try(trimspace(local.manifests[name].filter), "")
      firestore     = length(try(local.manifests[name].state, [])) > 0 # state: [idempotency, records]

      env = {
        for key, value in try(local.manifests[name].env, null) == null ? tomap({}) : tomap(local.manifests[name].env) :
        key => replace(replace(replace(replace(replace(replace(value == null ? "" : tostring(value),
          "$${project}", var.project_id),
          "$${region}", var.region),
          "$${topic}", var.topic_name),
          "$${archive_bucket}", local.archive_bucket_name),
          "$${bigquery_dataset}", var.bigquery_dataset_id),
        "$${state_collection}", var.idempotency_collection)
      }

      # Environment variable -> Secret Manager secret id (<function>-<variable, lower-case, dashes>).
      secrets = {
        for variable in try(local.manifests[name].secrets, null) == null ? tolist([]) : tolist(local.manifests[name].secrets) :
        variable => "${name}-${lower(replace(variable, "_", "-"))}"
      }
      # Optional secrets (the previous webhook token during a rotation) are created and readable like
      # the others, but passed to the function only when var.optional_secrets names them: a function
      # cannot start with a secret that has no version.
      optional_secrets = {
        for variable in try(local.manifests[name].optional_secrets, null) == null ? tolist([]) : tolist(local.manifests[name].optional_secrets) :
        variable => "${name}-${lower(replace(variable, "_", "-"))}"
      }

      iam = distinct([
        for binding in try(local.manifests[name].iam, null) == null ? [] : local.manifests[name].iam :
        { role = replace(tostring(binding.role), "$${project}", var.project_id), scope = tostring(binding.scope) }
      ])

      memory          = tostring(local.manifests[name].resources.memory)
      cpu             = try(tostring(local.manifests[name].resources.cpu), null)
      timeout_seconds = local.manifests[name].resources.timeout_seconds
      max_instances   = local.manifests[name].resources.max_instances
      min_instances   = try(local.manifests[name].resources.min_instances, 0)
      concurrency     = try(local.manifests[name].resources.concurrency, 1)

      delivery = {
        ack_deadline_seconds  = try(local.manifests[name].delivery.ack_deadline_seconds, min(600, 60 * (ceil(local.manifests[name].resources.timeout_seconds / 60) + 1)))
        min_backoff_seconds   = try(local.manifests[name].delivery.min_backoff_seconds, 10)
        max_backoff_seconds   = try(local.manifests[name].delivery.max_backoff_seconds, 600)
        max_delivery_attempts = try(local.manifests[name].delivery.max_delivery_attempts, 5)
      }
    }
  }

  http_functions   = { for name, fn in local.functions : name => fn if fn.trigger == "http" }
  pubsub_functions = { for name, fn in local.functions : name => fn if fn.trigger == "pubsub" }

  # The shortest ack deadline that leaves a push room to finish (cold start, queueing):
  # the timeout rounded up to a whole minute, plus a minute, at most Pub/Sub's 600 s.
  # manifest.schema.json holds manifests to the same rule.
  min_ack_deadline = { for name, fn in local.pubsub_functions : name => min(600, 60 * (ceil(fn.timeout_seconds / 60) + 1)) }

  # "<function>/<VARIABLE>" -> secret id, for every secret, required or optional, of every enabled function.
  secrets = merge([
    for name, fn in local.functions : { for variable, id in merge(fn.secrets, fn.optional_secrets) : "${name}/${variable}" => id }
  ]...)

  # Every "<function>/<VARIABLE>" a manifest declares optional (what var.optional_secrets may name).
  declared_optional_secrets = flatten([
    for name, manifest in local.manifests : [for variable in try(tolist(manifest.optional_secrets), []) : "${name}/${variable}"]
  ])

  # The Pub/Sub service agent pushes, signs OIDC tokens and dead-letters on our behalf.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  apis = setunion(var.trace_exporter == "gcp" ? ["cloudtrace.googleapis.com"] : [], [
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  # What every function gets for var.trace_exporter (buildkite_events.tracing reads it).
  trace_env = merge(
    var.trace_exporter == "none" ? {} : { TRACE_EXPORTER = var.trace_exporter },
    var.trace_exporter == "otlp" ? { OTEL_EXPORTER_OTLP_ENDPOINT = var.trace_otlp_endpoint } : {},
  )
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "enabled" {
  for_each = var.enable_apis ? local.apis : toset([])

  project = var.project_id
  service = each.value

  # Other workloads in the project may use the same APIs.
  disable_on_destroy = false
}

# Bundles that `make package` builds are where Terraform's first deployment of each
# function comes from. Later code changes belong to `make deploy-<name>` (see functions.tf).
check "bundles_built" {
  assert {
    condition     = alltrue([for name in keys(local.functions) : fileexists("${local.bundle_dir}/${name}.zip")])
    error_message = "Missing function bundles in ${local.bundle_dir}: ${join(", ", [for name in keys(local.functions) : "${name}.zip" if !fileexists("${local.bundle_dir}/${name}.zip")])}. Run `make package` before the first terraform apply of a function."
  }
}
