# The dataset bigquery-metrics writes to. Tables come from schemas/bigquery/<table>.json and
# views from queries/views/<view>.sql: adding a file adds the table or view.
#
# A schema file is either BigQuery's JSON schema (a list of fields) or an object with
# "fields" and, optionally, "description", "time_partitioning" ({"type", "field",
# "expiration_ms"}) and "clustering" (a list of up to four field names). In a view's SQL,
# ${project} and ${bigquery_dataset} are replaced as in the manifests, and
# ${deploy_pipelines_regex} by the deploy_pipelines globs as one pattern.

locals {
  bigquery_tables = {
    for file in fileset(local.bigquery_schema_dir, "*.json") :
    trimsuffix(file, ".json") => jsondecode(file("${local.bigquery_schema_dir}/${file}"))
  }

  # Views that read other views sit in on_views/: BigQuery checks a view's query when it is
  # created, so those are made after the others.
  bigquery_view_sql = {
    for file in setunion(fileset(local.bigquery_views_dir, "*.sql"), fileset(local.bigquery_views_dir, "on_views/*.sql")) :
    file => replace(replace(replace(file("${local.bigquery_views_dir}/${file}"),
      "$${project}", var.project_id),
      "$${bigquery_dataset}", var.bigquery_dataset_id),
    "$${deploy_pipelines_regex}", local.deploy_pipelines_regex)
  }
  bigquery_views          = { for file, sql in local.bigquery_view_sql : trimsuffix(file, ".sql") => sql if dirname(file) == "." }
  bigquery_views_on_views = { for file, sql in local.bigquery_view_sql : trimsuffix(basename(file), ".sql") => sql if dirname(file) != "." }
}

# The DORA views' deploy pipelines: var.deploy_pipelines as one anchored pattern over the
# pipeline slug (* any run of characters, ? one character; no globs: a pattern no slug
# matches), the same rule tools/bigquery.py applies for the local stack and the tests.
locals {
  deploy_pipelines_regex = length(var.deploy_pipelines) == 0 ? "^$" : format("^(%s)$", join("|", [
    for glob in var.deploy_pipelines : replace(replace(glob, "*", ".*"), "?", ".")
  ]))
}

resource "google_bigquery_dataset" "events" {
  # checkov:skip=CKV_GCP_81: Google-managed encryption; build metadata needs no customer-managed key, and an organisation that requires one sets it by policy
  project     = var.project_id
  dataset_id  = var.bigquery_dataset_id
  location    = local.bigquery_location
  description = "Buildkite build and job metrics written by buildkite-fanout."
  labels      = local.labels

  # Dropping the dataset must never take the metrics with it.
  delete_contents_on_destroy = false

  depends_on = [google_project_service.enabled]
}

resource "google_bigquery_table" "table" {
  # checkov:skip=CKV_GCP_80: Google-managed encryption, as for the dataset
  for_each = local.bigquery_tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.events.dataset_id
  table_id            = each.key
  description         = try(each.value.description, null)
  labels              = local.labels
  deletion_protection = var.deletion_protection

  schema     = jsonencode(try(each.value.fields, each.value))
  clustering = try(each.value.clustering, null)

  dynamic "time_partitioning" {
    for_each = try([each.value.time_partitioning], [])
    content {
      type          = try(time_partitioning.value.type, "DAY")
      field         = try(time_partitioning.value.field, null)
      expiration_ms = try(time_partitioning.value.expiration_ms, null)
    }
  }
}

resource "google_bigquery_table" "view" {
  # checkov:skip=CKV_GCP_80: a view stores no data to encrypt
  for_each = local.bigquery_views

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.events.dataset_id
  table_id            = each.key
  labels              = local.labels
  deletion_protection = var.deletion_protection

  view {
    query          = each.value
    use_legacy_sql = false
  }

  lifecycle {
    precondition {
      condition     = !contains(keys(local.bigquery_tables), each.key)
      error_message = "queries/views/${each.key}.sql and schemas/bigquery/${each.key}.json would both be the table ${each.key}; rename one."
    }
  }

  depends_on = [google_bigquery_table.table]
}

resource "google_bigquery_table" "view_on_views" {
  # checkov:skip=CKV_GCP_80: a view stores no data to encrypt
  for_each = local.bigquery_views_on_views

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.events.dataset_id
  table_id            = each.key
  labels              = local.labels
  deletion_protection = var.deletion_protection

  view {
    query          = each.value
    use_legacy_sql = false
  }

  lifecycle {
    precondition {
      condition     = !contains(concat(keys(local.bigquery_tables), keys(local.bigquery_views)), each.key)
      error_message = "queries/views/on_views/${each.key}.sql has the name of another table or view; rename it."
    }
  }

  depends_on = [google_bigquery_table.view]
}
