-- events: one row per event, every kind Buildkite sends. Queries read this view, never the
-- events_raw table, which can hold an event twice after a redelivery or a retried insert.
-- When the same event arrived from both producers, the row from our ingress wins over the one
-- from mcncl/buildkite-pubsub, which drops fields; else the first row written.
SELECT
  * EXCEPT (row_rank)
FROM (
  SELECT
    *,
    ROW_NUMBER() OVER (
      PARTITION BY event_key
      ORDER BY IF(source_format = 'mcncl', 1, 0), inserted_at, message_id
    ) AS row_rank
  FROM `${project}.${bigquery_dataset}.events_raw`
)
WHERE row_rank = 1
