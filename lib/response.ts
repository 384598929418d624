/**
 * The HTTP side of opening a stream: the response head, and the client's
 * last event id as it came in. Pure of stream state.
 */
import type { ServerResponse } from 'node:http'
import type { Http2ServerResponse } from 'node:http2'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { PRINTABLE } from './ids.js'

/** Flattens a concatenated string in place (see `writeHead()`). Kept in a sink so no compiler drops the conversion. */
let flattenSink = 0
function flatten (s: string): void {
  flattenSink = Number(s) || flattenSink
}

/**
 * Writes the event stream's response head: the reply's headers (CORS and
 * the like) less those that would describe a body of fixed length or
 * encoding, and less HTTP/1-only ones on HTTP/2. Returns `http2`.
 */
export function writeHead (reply: FastifyReply, res: ServerResponse | Http2ServerResponse, http2: boolean): boolean {
  const headers = reply.getHeaders()
  delete headers['content-length']
  delete headers['content-encoding']
  delete headers['transfer-encoding']
  if (http2) {
    delete headers.connection
    delete headers['keep-alive']
    delete headers['proxy-connection']
    delete headers.upgrade
  }
  headers['content-type'] = 'text/event-stream; charset=utf-8'
  headers['cache-control'] = 'no-cache, no-transform'
  headers['x-accel-buffering'] = 'no'
  res.writeHead(200, headers as Record<string, string>)
  // Node keeps the header block for the response's whole life as a rope of
  // ~25 concatenated pieces (~770 bytes per open stream). Converting it to a
  // number makes V8 flatten it in place into one string (~200 bytes): the
  // trick pino's flatstr uses. Harmless where it does not apply.
  const block = (res as { _header?: unknown })._header
  if (typeof block === 'string') flatten(block)
  return http2
}

/**
 * The client's last event id: the `Last-Event-ID` header, else the
 * `lastEventId` query parameter. `valid` when it is one a resume can trust;
 * else `invalid` holds it as received (cut to 64 characters, non-printable
 * ones as `?`), never written raw. A parameter given more than once is
 * malformed: never a silent fresh start.
 */
export function lastEventIdOf (request: FastifyRequest): { valid: string | undefined, invalid: string | undefined } {
  let id: string | string[] | undefined
  const header = request.headers['last-event-id']
  if (typeof header === 'string' && header !== '') {
    id = header
  } else {
    const query = request.query as Record<string, unknown> | null | undefined
    const value = query !== null && typeof query === 'object' ? query.lastEventId : undefined
    if (Array.isArray(value)) id = value.map(String)
    else if (typeof value === 'string' && value !== '') id = value
  }
  if (id === undefined || (typeof id === 'string' && PRINTABLE.test(id))) return { valid: id, invalid: undefined }
  const text = typeof id === 'string' ? id : id.join(',')
  return { valid: undefined, invalid: text.slice(0, 64).replace(/[^\x20-\x7e]/g, '?') }
}
