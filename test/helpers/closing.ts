/**
 * Closing test clients without racing app.close(): abort them, then wait
 * (event-driven, bounded) until the server has logged that many more
 * 'sse stream closed' lines, so teardown never meets a half-closed stream.
 */
import type { LogLine, SseClient } from './index.js'

type UntilLog = (what: string, match: (line: LogLine) => boolean, ms?: number) => Promise<LogLine>

/** Counts the server's 'sse stream closed' log lines so far. */
export function closedCount (logs: LogLine[]): number {
  let n = 0
  for (const l of logs) if (l.msg === 'sse stream closed') n++
  return n
}

/** Aborts `clients` and resolves once the server has seen every one of them go. */
export async function closeClients (logs: LogLine[], untilLog: UntilLog, ...clients: SseClient[]): Promise<void> {
  const open = clients.filter(c => c.ending === null)
  const target = closedCount(logs) + open.length
  for (const c of clients) c.close()
  if (open.length === 0) return
  await untilLog(`${open.length} streams closed on the server`, () => closedCount(logs) >= target)
}
