# The archive gcs-archive writes each event to once, and the bucket for function bundles.

resource "google_storage_bucket" "archive" {
  # checkov:skip=CKV_GCP_62: access is recorded by Cloud Audit Logs (data access); legacy usage-log buckets would duplicate them
  # checkov:skip=CKV_GCP_78: each event is written once (if_generation_match=0) and deleted by the retention rule; versions would outlive the retention
  project  = var.project_id
  name     = local.archive_bucket_name
  location = local.bucket_location
  labels   = local.labels

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Archived events are rarely read after a month; Nearline keeps them for less.
  dynamic "lifecycle_rule" {
    for_each = var.archive_retention_days > 30 ? [30] : []
    content {
      condition {
        age                   = lifecycle_rule.value
        matches_storage_class = ["STANDARD"]
      }
      action {
        type          = "SetStorageClass"
        storage_class = "NEARLINE"
      }
    }
  }

  lifecycle_rule {
    condition {
      age = var.archive_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket" "sources" {
  # checkov:skip=CKV_GCP_62: access is recorded by Cloud Audit Logs (data access); legacy usage-log buckets would duplicate them
  # checkov:skip=CKV_GCP_78: holds each function's first bundle only, rebuilt by `make package` at will; nothing to recover
  project  = var.project_id
  name     = local.source_bucket_name
  location = local.bucket_location
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  depends_on = [google_project_service.enabled]
}
