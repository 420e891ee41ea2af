# Functions whose manifest declares `state` keep it in Firestore (buildkite_events.state):
# claims per event, ordered records. Every document carries expire_at; the TTL policy deletes them.

locals {
  needs_firestore = anytrue([for fn in values(local.functions) : fn.firestore])
}

resource "google_firestore_database" "default" {
  count = local.needs_firestore && var.create_firestore_database ? 1 : 0

  project     = var.project_id
  name        = "(default)" # what the client libraries use unless told otherwise
  location_id = local.firestore_location
  type        = "FIRESTORE_NATIVE"

  delete_protection_state = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy         = var.deletion_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.enabled]
}

resource "google_firestore_field" "idempotency_ttl" {
  count = local.needs_firestore ? 1 : 0

  project    = var.project_id
  database   = "(default)"
  collection = var.state_collection
  field      = "expire_at"

  ttl_config {}

  # An always-increasing timestamp indexed per document makes a write hotspot; nothing
  # queries this field.
  index_config {}

  depends_on = [google_firestore_database.default]
}
