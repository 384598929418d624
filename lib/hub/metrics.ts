/**
 * `stats()` in the Prometheus text format (version 0.0.4). Pure.
 */
import type { SseStats } from './stats.js'

function escapeLabel (value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

/** The counts of `s` as Prometheus text, names prefixed `sse_hub_`. */
export function prometheus (s: SseStats): string {
  const out: string[] = []
  const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: Array<[string, number]>): void => {
    out.push(`# HELP sse_hub_${name} ${help}`, `# TYPE sse_hub_${name} ${type}`)
    for (const [labels, value] of samples) out.push(`sse_hub_${name}${labels} ${value}`)
  }
  const one = (value: number): Array<[string, number]> => [['', value]]
  metric('open_streams', 'gauge', 'Streams open now.', one(s.openStreams))
  metric('subscriptions', 'gauge', 'Stream subscriptions to topics now.', one(s.subscriptions))
  metric('topics', 'gauge', 'Topics with subscribers or listeners in this process.', one(s.topics))
  metric('history_events', 'gauge', 'Events held in this process\'s history.', one(s.historyEvents))
  metric('history_bytes', 'gauge', 'Bytes of history held in this process, counted from above.', one(s.historyBytes))
  metric('backend_connected', 'gauge', 'Whether the backend can publish (1) or not (0).', [[`{kind="${escapeLabel(s.backend.kind)}"}`, s.backend.connected ? 1 : 0]])
  const channels = Object.entries(s.channels)
  metric('channel_topics', 'gauge', 'Topics of a channel with subscribers in this process.', channels.map(([name, c]) => [`{channel="${escapeLabel(name)}"}`, c.topics]))
  metric('channel_subscribers', 'gauge', 'Subscriptions to a channel\'s topics in this process.', channels.map(([name, c]) => [`{channel="${escapeLabel(name)}"}`, c.subscribers]))
  metric('streams_opened_total', 'counter', 'Streams opened.', one(s.streamsOpened))
  metric('published_total', 'counter', 'Events published from this process.', one(s.published))
  metric('deliveries_total', 'counter', 'Events handed to streams (events x subscribers).', one(s.deliveries))
  metric('slow_client_cuts_total', 'counter', 'Streams cut for holding more than maxBufferedBytes unsent.', one(s.slowClientCuts))
  metric('shed_total', 'counter', 'Streams turned away over maxConnections.', one(s.shed))
  metric('shed_per_client_total', 'counter', 'Streams turned away over maxStreamsPerClient.', one(s.shedPerClient))
  metric('expired_total', 'counter', 'Streams ended at the end of their lifetime.', one(s.expired))
  metric('disconnected_total', 'counter', 'Streams ended by disconnect({ tag }).', one(s.disconnected))
  metric('resumes_total', 'counter', 'Streams resumed from history.', one(s.resumes))
  metric('resets_total', 'counter', 'Streams sent a reset instead of a replay.', one(s.resets))
  metric('writes_total', 'counter', 'Socket writes.', one(s.writes))
  metric('heartbeats_total', 'counter', 'Heartbeat comments written.', one(s.heartbeats))
  return out.join('\n') + '\n'
}
