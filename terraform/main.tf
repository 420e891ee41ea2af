# Everything below is driven by the function manifests: adding functions/<name>/function.yaml
# (and running `make package`) adds that function's service account, secrets, function,
# subscription and dead-letter queue with no edit here.
# shared/buildkite_events/manifest.schema.json documents each key.

locals {
  bundle_dir          = coalesce(var.bundle_dir, "${path.module}/../build/first")
  bigquery_schema_dir = coalesce(var.bigquery_schema_dir, "${path.module}/../schemas/bigquery")
  bigquery_views_dir  = coalesce(var.bigquery_views_dir, "${path.module}/../queries/views")

  archive_bucket_name = coalesce(var.archive_bucket_name, "${var.project_id}-buildkite-archive")
  source_bucket_name  = coalesce(var.source_bucket_name, "${var.project_id}-buildkite-fanout-sources")
  bucket_location     = upper(var.region)
  bigquery_location   = coalesce(var.bigquery_location, var.region)
  firestore_location  = coalesce(var.firestore_location, var.region)

  labels = merge({ app = "buildkite-fanout" }, var.labels)

  # The manifests, as `make package` normalises them (tools/manifests.py writes
  # build/manifests.json from functions/*/function.yaml with buildkite_events.manifest): every
  # default filled in, secret ids and Pub/Sub names made, problems found. Terraform fills in
  # the placeholders and stops the plan on any problem (functions.tf) or on a file older than
  # the manifests (below), so no rule of the manifests is written here a second time.
  manifests_file = coalesce(var.manifests_file, "${path.module}/../build/manifests.json")
  normalised     = fileexists(local.manifests_file) ? jsondecode(file(local.manifests_file)) : null
  manifests      = local.normalised == null ? {} : local.normalised.functions
  manifests_dir  = local.normalised == null ? "" : "${dirname(local.manifests_file)}/${local.normalised.functions_dir}"

  # Manifests edited, added or removed since the file was written.
  stale_manifests = local.normalised == null ? [] : sort(distinct(concat(
    [for name, fn in local.manifests : name if !fileexists("${local.manifests_dir}/${name}/function.yaml") ? true : filesha256("${local.manifests_dir}/${name}/function.yaml") != fn.sha256],
    [for path in fileset(local.manifests_dir, "*/function.yaml") : dirname(path) if !contains(keys(local.manifests), dirname(path))],
  )))

  # The manifests' ${placeholders} (buildkite_events.manifest.PLACEHOLDERS), filled in with templatestring.
  placeholders = {
    project          = var.project_id
    region           = var.region
    topic            = var.topic_name
    archive_bucket   = local.archive_bucket_name
    bigquery_dataset = var.bigquery_dataset_id
    state_collection = var.state_collection
  }

  enabled_names = var.enabled_functions == null ? keys(local.manifests) : [
    for name in distinct(var.enabled_functions) : name if contains(keys(local.manifests), name)
  ]

  functions = {
    for name in local.enabled_names : name => {
      problems         = local.manifests[name].problems
      description      = local.manifests[name].description
      trigger          = local.manifests[name].trigger
      runtime          = local.manifests[name].runtime
      entry_point      = local.manifests[name].entry_point
      filter           = local.manifests[name].filter
      firestore        = local.manifests[name].uses_firestore
      env              = { for key, value in local.manifests[name].env : key => templatestring(value, local.placeholders) }
      secrets          = local.manifests[name].secrets          # VARIABLE -> secret id
      optional_secrets = local.manifests[name].optional_secrets # passed only when var.optional_secrets names them
      iam              = [for binding in local.manifests[name].iam : { role = templatestring(binding.role, local.placeholders), scope = binding.scope }]
      memory           = local.manifests[name].resources.memory
      cpu              = local.manifests[name].resources.cpu
      timeout_seconds  = local.manifests[name].resources.timeout_seconds
      max_instances    = local.manifests[name].resources.max_instances
      min_instances    = local.manifests[name].resources.min_instances
      concurrency      = local.manifests[name].resources.concurrency
      delivery         = local.manifests[name].delivery
      subscription     = templatestring(local.manifests[name].subscription, local.placeholders)
      dead_letter      = templatestring(local.manifests[name].dead_letter, local.placeholders)
      replay           = templatestring(local.manifests[name].replay, local.placeholders)
    }
  }

  http_functions    = { for name, fn in local.functions : name => fn if fn.trigger == "http" }
  pubsub_functions  = { for name, fn in local.functions : name => fn if fn.trigger == "pubsub" }
  dead_letter_names = { for name, fn in local.pubsub_functions : name => fn.dead_letter }

  # "<function>/<VARIABLE>" -> secret id, for every secret, required or optional, of every enabled function.
  secrets = merge([
    for name, fn in local.functions : { for variable, id in merge(fn.secrets, fn.optional_secrets) : "${name}/${variable}" => id }
  ]...)

  # Every "<function>/<VARIABLE>" a manifest declares optional (what var.optional_secrets may name).
  declared_optional_secrets = flatten([
    for name, manifest in local.manifests : [for variable in keys(manifest.optional_secrets) : "${name}/${variable}"]
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

  lifecycle {
    precondition {
      condition     = local.normalised != null
      error_message = "${local.manifests_file} is missing: run `make package`, which writes it from functions/*/function.yaml (and the bundles a first apply needs)."
    }
    precondition {
      condition     = length(local.stale_manifests) == 0
      error_message = "${local.manifests_file} is older than the manifests of ${join(", ", local.stale_manifests)} (edited, added or removed since): run `make package` again."
    }
  }
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
