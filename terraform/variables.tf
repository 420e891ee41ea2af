variable "project_id" {
  description = "ID of the Google Cloud project that runs the fan-out."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID: 6 to 30 lower-case letters, digits or dashes, starting with a letter and not ending with a dash (the ID, not the project's display name or number)."
  }
}

variable "region" {
  description = "Region for the Cloud Functions and, unless overridden, the buckets, the BigQuery dataset and the Firestore database."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a region such as us-central1 or europe-west1: not a zone (europe-west1-b) and not a multi-region (EU)."
  }
}

variable "enabled_functions" {
  description = "Names of the functions to deploy (folders under functions/). null deploys every function that has a function.yaml."
  type        = list(string)
  default     = null

  validation {
    condition     = var.enabled_functions == null || length(setsubtract(toset(coalesce(var.enabled_functions, [])), keys(local.manifests))) == 0
    error_message = "enabled_functions names a function that has no functions/<name>/function.yaml: ${join(", ", setsubtract(toset(coalesce(var.enabled_functions, [])), keys(local.manifests)))}. Known functions: ${join(", ", sort(keys(local.manifests)))}."
  }
}

variable "optional_secrets" {
  description = "Optional manifest secrets to pass to their function, as \"<function>/<VARIABLE>\": \"ingress/BUILDKITE_WEBHOOK_TOKEN_PREVIOUS\" while the webhook token is rotated. Terraform creates every optional secret, empty, either way; name one here only once it has a version, because a function cannot start with a secret that has none."
  type        = set(string)
  default     = []

  validation {
    condition     = length(setsubtract(var.optional_secrets, local.declared_optional_secrets)) == 0
    error_message = "optional_secrets names ${join(", ", setsubtract(var.optional_secrets, local.declared_optional_secrets))}, which no manifest declares under optional_secrets. Declared: ${jsonencode(local.declared_optional_secrets)}."
  }
}

variable "topic_name" {
  description = "Name of the Pub/Sub topic the ingress publishes every Buildkite event to."
  type        = string
  default     = "buildkite-events"

  validation {
    condition     = length(var.topic_name) <= 255 && can(regex("^[A-Za-z][A-Za-z0-9._~+%-]{2,}$", var.topic_name)) && !startswith(lower(var.topic_name), "goog")
    error_message = "topic_name must be 3 to 255 characters, start with a letter, use only letters, digits and . _ ~ + % -, and not start with \"goog\"."
  }
}

variable "archive_bucket_name" {
  description = "Name of the Cloud Storage bucket gcs-archive writes to. null: \"<project_id>-buildkite-archive\"."
  type        = string
  default     = null

  validation {
    condition     = var.archive_bucket_name == null || can(regex("^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$", coalesce(var.archive_bucket_name, "ok")))
    error_message = "archive_bucket_name must be 3 to 63 lower-case letters, digits, dashes, underscores or dots, starting and ending with a letter or digit."
  }
}

variable "archive_retention_days" {
  description = "Days an archived event is kept before Cloud Storage deletes it. Objects move to Nearline after 30 days when this is longer."
  type        = number
  default     = 365

  validation {
    condition     = var.archive_retention_days >= 1 && var.archive_retention_days <= 36500 && floor(var.archive_retention_days) == var.archive_retention_days
    error_message = "archive_retention_days must be a whole number of days from 1 to 36500. A lifecycle age of 0 would delete every archived event as soon as it is written."
  }
}

variable "source_bucket_name" {
  description = "Name of the bucket holding the function bundles Terraform deploys first. null: \"<project_id>-buildkite-fanout-sources\"."
  type        = string
  default     = null

  validation {
    condition     = var.source_bucket_name == null || can(regex("^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$", coalesce(var.source_bucket_name, "ok")))
    error_message = "source_bucket_name must be 3 to 63 lower-case letters, digits, dashes, underscores or dots, starting and ending with a letter or digit."
  }
}

variable "bigquery_dataset_id" {
  description = "BigQuery dataset for build metrics (tables from schemas/bigquery/*.json, views from queries/views/*.sql)."
  type        = string
  default     = "buildkite"

  validation {
    condition     = length(var.bigquery_dataset_id) <= 1024 && can(regex("^[A-Za-z0-9_]+$", var.bigquery_dataset_id))
    error_message = "bigquery_dataset_id may contain only letters, digits and underscores (no dashes), at most 1024 of them."
  }
}

variable "deploy_pipelines" {
  description = "Pipelines that deploy to production, as pipeline-slug globs (* any run of characters, ? one): a passed build of one is a deployment for the DORA four keys (queries/views/on_views/deployments.sql). Empty: no deployments."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for glob in var.deploy_pipelines : can(regex("^[a-z0-9_*?-]+$", glob))])
    error_message = "Each deploy_pipelines entry is a pipeline-slug glob: lower-case letters, digits, - and _, plus * and ?."
  }
}

variable "bigquery_location" {
  description = "Location of the BigQuery dataset (a region or US / EU). null: the region."
  type        = string
  default     = null
}

variable "firestore_location" {
  description = "Location of the Firestore database that remembers handled events (a region or nam5 / eur3). null: the region."
  type        = string
  default     = null
}

variable "create_firestore_database" {
  description = "Create the (default) Firestore database when a function declares state (idempotency claims or per-build records). Set false if the project already has one: Terraform then only adds the TTL policy."
  type        = bool
  default     = true
}

variable "state_collection" {
  description = "Firestore collection of every function's state (claims and ordered records, buildkite_events.state.DEFAULT_COLLECTION, whose name predates the records); manifests get it as $${state_collection}, and its expire_at field gets a TTL policy."
  type        = string
  default     = "buildkite-fanout-idempotency"

  validation {
    condition     = length(var.state_collection) <= 1500 && can(regex("^[A-Za-z0-9_.-]+$", var.state_collection))
    error_message = "state_collection must be a top-level collection id: letters, digits, _ . or -."
  }
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/<p>/notificationChannels/<id>) told of every incident: a dead-letter queue holds messages, a function reports a configuration error, the ingress answers 5xx. Required: [] is accepted, and every plan then warns that no one will be told."
  type        = list(string)

  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "Each notification channel must be a full id: projects/<project>/notificationChannels/<id>."
  }
}

variable "dead_letter_alert_after" {
  description = "How long a dead-letter queue must hold messages before the alert opens, in seconds."
  type        = number
  default     = 300

  validation {
    condition     = var.dead_letter_alert_after >= 60 && floor(var.dead_letter_alert_after) == var.dead_letter_alert_after
    error_message = "dead_letter_alert_after must be a whole number of seconds, at least 60 (the metric is sampled once a minute)."
  }
}

variable "public_ingress" {
  description = "How the ingress accepts Buildkite's unauthenticated POSTs: \"allUsers\" grants roles/run.invoker to allUsers; \"invoker_iam_disabled\" turns Cloud Run's invoker IAM check off for the ingress service instead (needs gcloud where Terraform runs), for organisations whose Domain Restricted Sharing policy refuses allUsers. `make deploy-ingress` must use the same (PUBLIC_INGRESS)."
  type        = string
  default     = "allUsers"

  validation {
    condition     = contains(["allUsers", "invoker_iam_disabled"], var.public_ingress)
    error_message = "public_ingress must be \"allUsers\" or \"invoker_iam_disabled\"."
  }
}

variable "trace_exporter" {
  description = "Where every function sends its spans (README \"Tracing one event\"): \"none\" (log lines still carry each event's trace), \"gcp\" (Cloud Trace: enables the API and grants each function's account roles/cloudtrace.agent) or \"otlp\" (an OpenTelemetry collector at trace_otlp_endpoint). Bundles must carry the exporter: build them with TRACE_EXPORTER set the same (`TRACE_EXPORTER=gcp make package`), and `make deploy-<name>` must use the same (TRACE_EXPORTER)."
  type        = string
  default     = "none"

  validation {
    condition     = contains(["none", "gcp", "otlp"], var.trace_exporter)
    error_message = "trace_exporter must be \"none\", \"gcp\" or \"otlp\"."
  }
}

variable "trace_otlp_endpoint" {
  description = "With trace_exporter = \"otlp\": the collector's OTLP/HTTP base URL (OTEL_EXPORTER_OTLP_ENDPOINT), such as http://otel-collector.internal:4318; spans go to <url>/v1/traces."
  type        = string
  default     = ""

  validation {
    condition     = var.trace_exporter != "otlp" || can(regex("^https?://[^/\\s]+", var.trace_otlp_endpoint))
    error_message = "trace_exporter = \"otlp\" needs trace_otlp_endpoint, the collector's http:// or https:// URL."
  }
}

variable "iam_propagation_wait" {
  description = "How long to wait after granting roles before building and starting functions that need them (a duration such as 60s or 2m). IAM changes take up to a few minutes to reach every service."
  type        = string
  default     = "60s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m)$", var.iam_propagation_wait))
    error_message = "iam_propagation_wait must be a duration such as 60s, 90s or 2m."
  }
}

variable "deletion_protection" {
  description = "Protect the BigQuery tables and the Firestore database from terraform destroy."
  type        = bool
  default     = true
}

variable "enable_apis" {
  description = "Enable the Google Cloud APIs the fan-out uses. Turn off where a project factory already manages them."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "Label keys must start with a lower-case letter; keys and values may contain only lower-case letters, digits, _ and -, at most 63 characters."
  }
}

# Where the repository keeps what Terraform reads. null: the repository layout around
# this folder. The tests point these at fixtures.

variable "manifests_file" {
  description = "The normalised manifests `make package` writes from functions/*/function.yaml (tools/manifests.py). null: ../build/manifests.json."
  type        = string
  default     = null
}

variable "bundle_dir" {
  description = "Folder holding each function's first bundle, <name>.zip, which `make package` writes once. null: ../build/first."
  type        = string
  default     = null
}

variable "bigquery_schema_dir" {
  description = "Folder of BigQuery table schemas, one <table>.json each. null: ../schemas/bigquery."
  type        = string
  default     = null
}

variable "bigquery_views_dir" {
  description = "Folder of BigQuery views, one <view>.sql each. null: ../queries/views."
  type        = string
  default     = null
}
