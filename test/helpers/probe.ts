/**
 * A bare page for browser tests that watch the wire through an engine's
 * native EventSource, or the typed client (the built /client.js the demo
 * serves), with no app code in between. Add `probeRoute` to a demo app
 * (startDemo's `setup`), open `/probe`, then run `openRaw` / `openTyped`
 * in the page with `page.evaluate`; what they record is in `window.raw[key]`
 * / `window.typed[key]`. The functions are serialised into the page: they
 * see nothing of this module.
 */
import type { FastifyInstance } from 'fastify'

export const PROBE_PATH = '/probe'

const PROBE_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>probe</title>
<script type="module">import { subscribe } from '/client.js'; window.subscribe = subscribe</script>
</head><body></body></html>`

/** Serves the probe page at /probe on `app` (before it is ready). */
export function probeRoute (app: FastifyInstance): void {
  app.get(PROBE_PATH, async (_request, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(PROBE_HTML))
}

/** What `openRaw` records: events of the given names, in order, and the connection's changes. */
export interface RawSeen {
  events: Array<{ event: string, id: string, data: string }>
  /** readyState after each open (1) and error (0: reconnecting, 2: given up). */
  states: number[]
  opens: number
  errors: number
}

/** What `openTyped` records. */
export interface TypedSeen {
  events: Array<{ event: string, id: string, data: unknown }>
  resets: Array<{ lastEventId: string, reason: string, id: string }>
  states: string[]
  errors: string[]
}

/** In the page: a native EventSource on `url`, listening for `names`. */
export function openRaw ({ key, url, names }: { key: string, url: string, names: string[] }): void {
  const w = window as unknown as { raw?: Record<string, RawSeen>, sources?: Record<string, EventSource> }
  const seen: RawSeen = { events: [], states: [], opens: 0, errors: 0 }
  const source = new EventSource(url)
  ;(w.raw ??= {})[key] = seen
  ;(w.sources ??= {})[key] = source
  for (const name of names) {
    source.addEventListener(name, (e) => { seen.events.push({ event: name, id: (e as MessageEvent).lastEventId, data: String((e as MessageEvent).data) }) })
  }
  source.addEventListener('open', () => { seen.opens++; seen.states.push(source.readyState) })
  source.addEventListener('error', () => { seen.errors++; seen.states.push(source.readyState) })
}

/** In the page: the typed client on `url`, with handlers for `names` and `options` (JSON: reconnect, lastEventId). */
export function openTyped ({ key, url, names, options = {} }: { key: string, url: string, names: string[], options?: Record<string, unknown> }): void {
  const w = window as unknown as {
    typed?: Record<string, TypedSeen>
    subs?: Record<string, { close: () => void, lastEventId: string | undefined }>
    subscribe: (url: string, handlers: Record<string, (data: unknown, meta: { id: string, event: string }) => void>, options: Record<string, unknown>) => { close: () => void, lastEventId: string | undefined }
  }
  const seen: TypedSeen = { events: [], resets: [], states: [], errors: [] }
  const handlers: Record<string, (data: unknown, meta: { id: string, event: string }) => void> = {}
  for (const name of names) handlers[name] = (data, meta) => { seen.events.push({ event: meta.event, id: meta.id, data }) }
  ;(w.typed ??= {})[key] = seen
  ;(w.subs ??= {})[key] = w.subscribe(url, handlers, {
    ...options,
    onReset: (info: { lastEventId: string, reason: string, id: string }) => { seen.resets.push(info) },
    onStateChange: (state: string) => { seen.states.push(state) },
    onError: (err: Error) => { seen.errors.push(err.message) }
  })
}
