# The repository's own manifests (../functions/*/function.yaml), whatever functions exist:
# each expectation below is derived from the raw YAML, not from Terraform's locals, so a
# new function folder is checked the moment it is added.
#
# Needs a bundle per function: `make package`, or the bundle_dir that
# `make terraform-check` passes.

mock_provider "google" {
  mock_data "google_project" {
    defaults = {
      number = "123456789012"
    }
  }
}

mock_provider "time" {}

variables {
  project_id            = "buildkite-fanout-ci"
  notification_channels = ["projects/buildkite-fanout-ci/notificationChannels/1"]
}

run "every_function_folder_is_deployed" {
  command = apply

  assert {
    condition     = jsonencode(keys(google_cloudfunctions2_function.function)) == jsonencode(sort([for path in fileset("../functions", "*/function.yaml") : dirname(path)]))
    error_message = "Every functions/<name>/function.yaml must become a function."
  }
  assert {
    condition = alltrue([
      for path in fileset("../functions", "*/function.yaml") :
      google_cloudfunctions2_function.function[dirname(path)].build_config[0].entry_point == yamldecode(file("../functions/${path}")).entry_point &&
      google_cloudfunctions2_function.function[dirname(path)].build_config[0].runtime == yamldecode(file("../functions/${path}")).runtime &&
      google_cloudfunctions2_function.function[dirname(path)].service_config[0].available_memory == yamldecode(file("../functions/${path}")).resources.memory &&
      google_cloudfunctions2_function.function[dirname(path)].service_config[0].timeout_seconds == yamldecode(file("../functions/${path}")).resources.timeout_seconds &&
      google_cloudfunctions2_function.function[dirname(path)].service_config[0].max_instance_count == yamldecode(file("../functions/${path}")).resources.max_instances
    ])
    error_message = "Each function's entry point, runtime, memory, timeout and max instances must come from its manifest."
  }
  assert {
    condition = alltrue(flatten([
      for name, fn in google_cloudfunctions2_function.function : [
        for value in values(fn.service_config[0].environment_variables) : !can(regex("\\$\\{", value))
      ]
    ]))
    error_message = "Every env placeholder in the manifests must be filled in."
  }
}

run "every_pubsub_function_is_wired_to_the_topic" {
  command = apply

  assert {
    condition = jsonencode(keys(google_pubsub_subscription.push)) == jsonencode(sort([
      for path in fileset("../functions", "*/function.yaml") : dirname(path) if yamldecode(file("../functions/${path}")).trigger == "pubsub"
    ]))
    error_message = "Exactly the Pub/Sub functions get a push subscription."
  }
  assert {
    condition = alltrue([
      for name, sub in google_pubsub_subscription.push :
      sub.filter == trimspace(try(yamldecode(file("../functions/${name}/function.yaml")).filter, "")) &&
      sub.topic == google_pubsub_topic.events.id &&
      sub.ack_deadline_seconds == try(yamldecode(file("../functions/${name}/function.yaml")).delivery.ack_deadline_seconds, 60) &&
      tonumber(trimsuffix(sub.retry_policy[0].minimum_backoff, "s")) == try(yamldecode(file("../functions/${name}/function.yaml")).delivery.min_backoff_seconds, 10) &&
      tonumber(trimsuffix(sub.retry_policy[0].maximum_backoff, "s")) == try(yamldecode(file("../functions/${name}/function.yaml")).delivery.max_backoff_seconds, 600)
    ])
    error_message = "Each subscription must carry its manifest's filter, ack deadline and retry policy."
  }
  assert {
    condition = alltrue([
      for name, sub in google_pubsub_subscription.push :
      sub.dead_letter_policy[0].dead_letter_topic == google_pubsub_topic.dead_letter[name].id &&
      sub.dead_letter_policy[0].max_delivery_attempts == try(yamldecode(file("../functions/${name}/function.yaml")).delivery.max_delivery_attempts, 5) &&
      google_pubsub_subscription.dead_letter[name].topic == google_pubsub_topic.dead_letter[name].id
    ])
    error_message = "Each subscription must dead-letter to its own topic, which has a pull subscription."
  }
  assert {
    condition = alltrue([
      for name, sub in google_pubsub_subscription.push :
      sub.push_config[0].push_endpoint == google_cloudfunctions2_function.function[name].service_config[0].uri &&
      sub.push_config[0].oidc_token[0].service_account_email == google_service_account.push.email &&
      google_cloud_run_v2_service_iam_member.push[name].member == google_service_account.push.member
    ])
    error_message = "Each subscription must push to its function with the push account's OIDC token, and only that account may invoke it."
  }
}

run "only_http_functions_are_public" {
  command = apply

  assert {
    condition = alltrue([
      for path in fileset("../functions", "*/function.yaml") :
      google_cloudfunctions2_function.function[dirname(path)].service_config[0].ingress_settings == (yamldecode(file("../functions/${path}")).trigger == "http" ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY")
    ])
    error_message = "Only HTTP functions take traffic from the internet; Pub/Sub functions accept internal traffic (Pub/Sub push) only."
  }

  assert {
    condition = jsonencode(keys(google_cloud_run_v2_service_iam_member.public)) == jsonencode(sort([
      for path in fileset("../functions", "*/function.yaml") : dirname(path) if yamldecode(file("../functions/${path}")).trigger == "http"
    ]))
    error_message = "Only HTTP functions (the ingress) may be public."
  }
  assert {
    condition     = output.webhook_url == try(google_cloudfunctions2_function.function["ingress"].url, null)
    error_message = "webhook_url must be the ingress function's URL."
  }
}

run "each_runtime_account_has_exactly_its_manifest_roles" {
  command = apply

  assert {
    condition = alltrue([
      for path in fileset("../functions", "*/function.yaml") :
      jsonencode(output.runtime_roles[dirname(path)]) == jsonencode(sort(distinct(concat(
        [
          for b in try(yamldecode(file("../functions/${path}")).iam, []) :
          lookup({
            project          = "${b.role} on project"
            topic            = "${b.role} on topic buildkite-events"
            archive_bucket   = "${b.role} on bucket buildkite-fanout-ci-buildkite-archive"
            bigquery_dataset = "${b.role} on dataset buildkite"
          }, b.scope, "")
          if !contains(["own_secrets", "bigquery_tables"], b.scope)
        ],
        flatten([
          for b in try(yamldecode(file("../functions/${path}")).iam, []) : [
            for file in fileset("../schemas/bigquery", "*.json") :
            "${try(google_project_iam_custom_role.custom[trimprefix(b.role, "projects/$${project}/roles/")].name, b.role)} on table ${trimsuffix(file, ".json")}"
          ] if b.scope == "bigquery_tables"
        ]),
        flatten([
          for variable in concat(try(yamldecode(file("../functions/${path}")).secrets, []), try(yamldecode(file("../functions/${path}")).optional_secrets, [])) : [
            for role in concat(["roles/secretmanager.secretAccessor"], [for b in try(yamldecode(file("../functions/${path}")).iam, []) : b.role if b.scope == "own_secrets"]) :
            "${role} on secret ${dirname(path)}-${lower(replace(variable, "_", "-"))}"
          ]
        ]),
        length(try(yamldecode(file("../functions/${path}")).state, [])) > 0 ? ["roles/datastore.user on database (default)"] : [],
      ))))
    ])
    error_message = "Some runtime account's roles differ from what its manifest asks for: ${jsonencode(output.runtime_roles)}"
  }
}

run "bigquery_tables_and_views_come_from_the_repository" {
  command = plan

  assert {
    condition     = jsonencode(keys(google_bigquery_table.table)) == jsonencode(sort([for file in fileset("../schemas/bigquery", "*.json") : trimsuffix(file, ".json")]))
    error_message = "Every schemas/bigquery/*.json must become a table."
  }
  assert {
    condition     = jsonencode(keys(google_bigquery_table.view)) == jsonencode(sort([for file in fileset("../queries/views", "*.sql") : trimsuffix(file, ".sql")]))
    error_message = "Every queries/views/*.sql must become a view."
  }
  assert {
    condition     = alltrue([for view in google_bigquery_table.view : !can(regex("\\$\\{", view.view[0].query))])
    error_message = "Every placeholder in the views' SQL must be filled in."
  }
}
