output "webhook_url" {
  description = "URL to give Buildkite as the webhook endpoint (the ingress function)."
  value       = try(google_cloudfunctions2_function.function["ingress"].url, null)
}

output "function_urls" {
  description = "URL of every deployed function, by name."
  value       = { for name, fn in google_cloudfunctions2_function.function : name => fn.url }
}

output "topic" {
  description = "The events topic, as projects/<project>/topics/<name>."
  value       = google_pubsub_topic.events.id
}

output "subscriptions" {
  description = "Push subscription of each Pub/Sub function."
  value       = { for name, sub in google_pubsub_subscription.push : name => sub.id }
}

output "dead_letter_subscriptions" {
  description = "Pull subscription on each Pub/Sub function's dead-letter topic, where undeliverable events wait."
  value       = { for name, sub in google_pubsub_subscription.dead_letter : name => sub.id }
}

output "runtime_service_accounts" {
  description = "Service account each function runs as."
  value       = { for name, sa in google_service_account.runtime : name => sa.email }
}

output "build_service_account" {
  description = "Service account Cloud Build builds the functions as (`make deploy-<name>` passes it as --build-service-account)."
  value       = google_service_account.build.email
}

output "replay_topics" {
  description = "Topic per Pub/Sub function whose only subscription delivers to that function: where `make replay` sends dead-lettered events."
  value       = { for name, topic in google_pubsub_topic.replay : name => topic.id }
}

output "push_service_account" {
  description = "Service account whose OIDC tokens Pub/Sub push deliveries carry."
  value       = google_service_account.push.email
}

output "secret_ids" {
  description = "Secret Manager secret of each manifest secret, by \"<function>/<VARIABLE>\". Add a version to each before the first apply of its function."
  value       = { for key, secret in google_secret_manager_secret.secret : key => secret.secret_id }
}

output "archive_bucket" {
  description = "Bucket the archive function writes events to."
  value       = google_storage_bucket.archive.name
}

output "source_bucket" {
  description = "Bucket holding each function's first bundle."
  value       = google_storage_bucket.sources.name
}

output "bigquery_dataset" {
  description = "BigQuery dataset, as <project>:<dataset>."
  value       = "${var.project_id}:${google_bigquery_dataset.events.dataset_id}"
}

output "bigquery_table_ids" {
  description = "Each table from schemas/bigquery, as <project>.<dataset>.<table>."
  value       = { for name, table in google_bigquery_table.table : name => "${var.project_id}.${table.dataset_id}.${table.table_id}" }
}

output "bigquery_view_ids" {
  description = "Each view from queries/views, as <project>.<dataset>.<view>."
  value       = { for name, view in merge(google_bigquery_table.view, google_bigquery_table.view_on_views) : name => "${var.project_id}.${view.dataset_id}.${view.table_id}" }
}

output "runtime_roles" {
  description = "Every role each function's service account holds, as \"<role> on <target>\": the audit view of least privilege."
  value = {
    for name, sa in google_service_account.runtime : name => sort(concat(
      [for b in google_project_iam_member.runtime : "${b.role} on project" if b.member == sa.member],
      [for b in google_project_iam_member.firestore : "${b.role} on database (default)" if b.member == sa.member],
      [for b in google_bigquery_table_iam_member.runtime : "${b.role} on table ${b.table_id}" if b.member == sa.member],
      [for b in google_pubsub_topic_iam_member.runtime : "${b.role} on topic ${b.topic}" if b.member == sa.member],
      [for b in google_storage_bucket_iam_member.runtime : "${b.role} on bucket ${b.bucket}" if b.member == sa.member],
      [for b in google_bigquery_dataset_iam_member.runtime : "${b.role} on dataset ${b.dataset_id}" if b.member == sa.member],
      [for b in google_secret_manager_secret_iam_member.runtime : "${b.role} on secret ${b.secret_id}" if b.member == sa.member],
    ))
  }
}

output "deploy_settings" {
  description = "What `make deploy-<name>` must deploy with so that the next plan shows no changes: the manifests' placeholder values and the functions' labels."
  value = merge(local.placeholders, {
    public_ingress = var.public_ingress
    trace_exporter = var.trace_exporter
    labels         = local.labels
  })
}
