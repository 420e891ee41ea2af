# One Cloud Monitoring dashboard, "buildkite-fanout": the ingress's answers, each function's
# deliveries by outcome and their p95 duration, the dead-letter backlogs and how long the
# oldest message of each subscription has waited. terraform/README.md says what each chart
# shows and what to do about it.
#
# Charts use filter-based queries (timeSeriesFilter) and are written in the form the
# Monitoring API returns them (chartOptions, targetAxis, thresholds, no zero xPos/yPos...),
# so that a plan after apply shows no changes.

locals {
  dead_letter_subscriptions = sort(values(local.dead_letter_names))
  delivery_subscriptions = sort(flatten([
    for fn in values(local.pubsub_functions) : [fn.subscription, fn.replay]
  ]))

  # Each chart: one or more filter-based queries, drawn as lines or stacked bars.
  charts = concat(
    [for chart in [{
      title = "Ingress answers per minute, by HTTP status class"
      unit  = "answers / min"
      plot  = "STACKED_BAR"
      queries = [for class in ["2", "4", "5"] : {
        legend = "${class}xx"
        filter = "metric.type = \"${local.log_metric_types.ingress_responses}\" AND resource.type = \"cloud_run_revision\" AND metric.label.status = starts_with(\"${class}\")"
        align  = "ALIGN_DELTA"
        reduce = "REDUCE_SUM"
        by     = []
      }]
    }] : chart if length(local.http_functions) > 0],
    [for chart in [
      {
        title = "Dead-letter backlog: events each function gave up on"
        unit  = "messages"
        plot  = "LINE"
        queries = [{
          legend = "$${resource.labels.subscription_id}"
          filter = "metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = one_of(${join(", ", [for s in local.dead_letter_subscriptions : "\"${s}\""])})"
          align  = "ALIGN_MAX"
          reduce = "REDUCE_MAX"
          by     = ["resource.label.subscription_id"]
        }]
      },
      {
        title = "p95 duration of a delivery that did its work (outcome done)"
        unit  = "ms"
        plot  = "LINE"
        queries = [{
          legend = "$${metric.labels.function}"
          filter = "metric.type = \"${local.log_metric_types.delivery_duration}\" AND resource.type = \"cloud_run_revision\" AND metric.label.outcome = \"done\""
          align  = "ALIGN_DELTA"
          reduce = "REDUCE_PERCENTILE_95"
          by     = ["metric.label.function"]
        }]
      },
      {
        title = "Oldest unacknowledged message, per subscription"
        unit  = "seconds"
        plot  = "LINE"
        queries = [{
          legend = "$${resource.labels.subscription_id}"
          filter = "metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = one_of(${join(", ", [for s in local.delivery_subscriptions : "\"${s}\""])})"
          align  = "ALIGN_MAX"
          reduce = "REDUCE_MAX"
          by     = ["resource.label.subscription_id"]
        }]
      },
    ] : chart if length(local.pubsub_functions) > 0],
    [for name in sort(keys(local.pubsub_functions)) : {
      title = "${name}: deliveries per minute, by outcome"
      unit  = "deliveries / min"
      plot  = "STACKED_BAR"
      queries = [{
        legend = "$${metric.labels.outcome}"
        filter = "metric.type = \"${local.log_metric_types.deliveries}\" AND resource.type = \"cloud_run_revision\" AND metric.label.function = \"${name}\""
        align  = "ALIGN_DELTA"
        reduce = "REDUCE_SUM"
        by     = ["metric.label.outcome"]
      }]
    }],
  )

  # Two charts side by side on a 12-column grid.
  tiles = [
    for index, chart in local.charts : merge(
      { width = 6, height = 4 },
      index % 2 == 0 ? {} : { xPos = 6 },
      index < 2 ? {} : { yPos = floor(index / 2) * 4 },
      {
        widget = {
          title = chart.title
          xyChart = {
            chartOptions = { mode = "COLOR" }
            dataSets = [for query in chart.queries : {
              legendTemplate     = query.legend
              minAlignmentPeriod = "60s"
              plotType           = chart.plot
              targetAxis         = "Y1"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  aggregation = {
                    alignmentPeriod    = "60s"
                    crossSeriesReducer = query.reduce
                    groupByFields      = query.by
                    perSeriesAligner   = query.align
                  }
                  filter = query.filter
                }
              }
            }]
            thresholds        = []
            timeshiftDuration = "0s"
            yAxis             = { label = chart.unit, scale = "LINEAR" }
          }
        }
      },
    )
  ]
}

resource "google_monitoring_dashboard" "fanout" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName  = "buildkite-fanout"
    mosaicLayout = { columns = 12, tiles = local.tiles }
  })

  depends_on = [google_project_service.enabled]
}
