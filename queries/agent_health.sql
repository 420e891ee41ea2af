-- Are the agents healthy?
--
-- From every agent event Buildkite sent (the events view), per agent queue and UTC day, over
-- events that happened in the window [since, until); each a count of distinct agents:
--   connected     agents that registered
--   disconnected  agents that shut down cleanly
--   stopped       agents told to stop (agent.stopping, agent.stopped): scale-in, a deploy of the agents
--   lost          agents Buildkite stopped hearing from (no heartbeat for three minutes): crashed,
--                 killed, out of memory, a spot instance taken away, the network gone
--   blocked       agents refused because their IP is no longer allowed (agent.blocked), plus refused
--                 registrations (cluster_token.registration_blocked: no agent yet, so no queue; they
--                 are counted as events under the queue "(registration)")
-- An agent's queue is its queue= tag ("default" without one). Days without agent events have no row.
WITH agent_events AS (
  SELECT
    CASE
      WHEN event_type LIKE 'cluster_token.%' THEN '(registration)'
      ELSE IFNULL(queue, 'default')
    END AS agent_queue,
    DATE(occurred_at) AS day,
    event_type,
    IFNULL(agent_id, agent_name) AS agent
  FROM `${project}.${bigquery_dataset}.events`
  WHERE occurred_at >= @since AND occurred_at < @until
    AND (event_type LIKE 'agent.%' OR event_type = 'cluster_token.registration_blocked')
)

SELECT
  agent_queue AS queue,
  day,
  COUNT(DISTINCT IF(event_type = 'agent.connected', agent, NULL)) AS connected,
  COUNT(DISTINCT IF(event_type = 'agent.disconnected', agent, NULL)) AS disconnected,
  COUNT(DISTINCT IF(event_type IN ('agent.stopping', 'agent.stopped'), agent, NULL)) AS stopped,
  COUNT(DISTINCT IF(event_type = 'agent.lost', agent, NULL)) AS lost,
  COUNT(DISTINCT IF(event_type = 'agent.blocked', agent, NULL))
    + COUNTIF(event_type = 'cluster_token.registration_blocked') AS blocked
FROM agent_events
GROUP BY agent_queue, day
ORDER BY day, queue
