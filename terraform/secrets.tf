# One secret per manifest secret, created empty: values never pass through Terraform or its
# state. terraform/README.md says how to add a version.

resource "google_secret_manager_secret" "secret" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = each.value
  labels    = merge(local.labels, { function = split("/", each.key)[0] })

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}
