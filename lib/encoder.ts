/**
 * Event -> SSE frame bytes, per the WHATWG HTML "Server-sent events" section.
 * Pure: no I/O. Everything that can inject a field is refused here, before a
 * byte is written anywhere.
 */
import {
  FST_ERR_SSEHUB_EVENT_INVALID,
  FST_ERR_SSEHUB_EVENT_TOO_LARGE,
  FST_ERR_SSEHUB_FIELD_INVALID,
  FST_ERR_SSEHUB_RETRY_INVALID
} from './errors.js'
import type { HubEvent } from './backend.js'

/** One event as handed to `stream.send()` or yielded by an iterable. */
export interface SseMessage {
  /**
   * The payload. A string is sent as is (split into one `data:` line per line;
   * CR and CRLF arrive as LF, all the format can carry); anything else is sent
   * as its `JSON.stringify`. Omitted: no `data:` line, so browsers dispatch
   * nothing (an `id`-only or `retry`-only frame).
   */
  data?: unknown
  /** The event name (`event:`); omitted or empty means the default `message`. No CR, LF or NUL. */
  event?: string
  /**
   * The event id (`id:`), which the browser sends back as `Last-Event-ID`.
   * An empty string resets the client's last id. No CR, LF or NUL; keep it to
   * printable ASCII of at most 128 bytes so it survives the trip through the header.
   */
  id?: string | number
  /** Reconnection delay in ms (`retry:`), a whole number from 0 to 2147483647. */
  retry?: number
  /** A comment line (`: text`) written before the fields; no CR or LF. */
  comment?: string
}

/**
 * Bytes ready for a connection. `chunk` is `body` wrapped as one HTTP/1.1
 * chunk (`<hex>\r\n<body>\r\n`), for writing straight to a socket; `body` is
 * a view into the same memory, for response objects that frame themselves.
 */
export interface Packet {
  readonly chunk: Buffer
  readonly body: Buffer
}

const BREAK = /[\r\n\0]/
const LINE = /\r\n|\r|\n/
const MAX_RETRY = 2 ** 31 - 1

/** Throws a coded error if `value` contains CR, LF or NUL. */
export function assertField (value: string, what: string): void {
  if (BREAK.test(value)) throw new FST_ERR_SSEHUB_FIELD_INVALID(what)
}

/** Throws a coded error unless `ms` is a whole number of milliseconds the format and every client can carry. */
export function assertRetry (ms: unknown): asserts ms is number {
  if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 0 || ms > MAX_RETRY) {
    throw new FST_ERR_SSEHUB_RETRY_INVALID(String(ms))
  }
}

/** `data:` lines for a string payload: one per line, CR, LF and CRLF all counting as a break. */
export function dataLines (data: string): string {
  if (!/[\r\n]/.test(data)) return 'data: ' + data + '\n'
  let out = ''
  for (const line of data.split(LINE)) out += 'data: ' + line + '\n'
  return out
}

/** A payload as the text of its `data:` lines: strings as is, anything else as JSON. */
export function dataText (data: unknown): string {
  if (typeof data === 'string') return data
  let text: string | undefined
  try {
    text = JSON.stringify(data)
  } catch (err) {
    throw new FST_ERR_SSEHUB_EVENT_INVALID(`data could not be serialised as JSON (${(err as Error).message})`)
  }
  if (text === undefined) throw new FST_ERR_SSEHUB_EVENT_INVALID(`data of type ${typeof data} has no JSON form`)
  return text
}

/**
 * The frame text of one event, fields in the order comment, event, id, retry,
 * data, ended by a blank line. Always a space after the colon, so a leading
 * space in a value survives the parser's removal of exactly one.
 */
export function frameText (message: SseMessage | string): string {
  if (typeof message === 'string') return dataLines(message) + '\n'
  if (message === null || typeof message !== 'object') {
    throw new FST_ERR_SSEHUB_EVENT_INVALID(`expected an object like { event, data, id } or a string, got ${message === null ? 'null' : typeof message}`)
  }
  let out = ''
  const { comment, event, id, retry, data } = message
  if (comment !== undefined) out += commentText(comment)
  if (event !== undefined && event !== '') {
    if (typeof event !== 'string') throw new FST_ERR_SSEHUB_EVENT_INVALID('event must be a string')
    assertField(event, 'an event name')
    out += 'event: ' + event + '\n'
  }
  if (id !== undefined) {
    if (typeof id === 'number' && !Number.isFinite(id)) throw new FST_ERR_SSEHUB_EVENT_INVALID(`id must be a finite number, got ${id}`)
    const text = typeof id === 'number' ? String(id) : id
    if (typeof text !== 'string') throw new FST_ERR_SSEHUB_EVENT_INVALID('id must be a string or a number')
    assertField(text, 'an event id')
    out += 'id: ' + text + '\n'
  }
  if (retry !== undefined) {
    assertRetry(retry)
    out += 'retry: ' + retry + '\n'
  }
  if (data !== undefined) out += dataLines(dataText(data))
  return out + '\n'
}

/** A comment line (no blank line after it), refused if it holds CR, LF or NUL. */
export function commentText (text: string): string {
  if (typeof text !== 'string') throw new FST_ERR_SSEHUB_EVENT_INVALID('a comment must be a string')
  assertField(text, 'a comment')
  return text === '' ? ':\n' : ': ' + text + '\n'
}

/**
 * Encodes one event to UTF-8 bytes, refusing it with a coded error when it is
 * larger than `maxBytes` once framed. Lone surrogates become U+FFFD.
 */
export function encode (message: SseMessage | string, maxBytes: number): Buffer {
  const text = frameText(message)
  // UTF-8 never takes fewer bytes than UTF-16 code units, so a string this
  // long is over the limit without paying for its encoding.
  if (text.length > maxBytes) throw new FST_ERR_SSEHUB_EVENT_TOO_LARGE(Buffer.byteLength(text), maxBytes)
  const bytes = Buffer.from(text, 'utf8')
  if (bytes.length > maxBytes) throw new FST_ERR_SSEHUB_EVENT_TOO_LARGE(bytes.length, maxBytes)
  return bytes
}

/**
 * A packet whose `body` view is made only if asked for: a socket takes the
 * chunk, and only response objects (HTTP/2, inject) and streams with
 * something queued read the body.
 */
class ChunkPacket implements Packet {
  private view: Buffer | null = null
  constructor (readonly chunk: Buffer, private readonly start: number, private readonly end: number) {}

  get body (): Buffer {
    return (this.view ??= this.chunk.subarray(this.start, this.end))
  }
}

/**
 * One packet from several frames: a single allocation holding the HTTP/1.1
 * chunk header, the frames back to back and the chunk trailer.
 */
export function packetOf (frames: readonly Buffer[], bytes: number): Packet {
  const head = bytes.toString(16) + '\r\n'
  const chunk = Buffer.allocUnsafe(head.length + bytes + 2)
  let at = chunk.write(head, 0, 'latin1')
  const start = at
  for (let i = 0; i < frames.length; i++) at += frames[i].copy(chunk, at)
  chunk[at] = 13
  chunk[at + 1] = 10
  return new ChunkPacket(chunk, start, at)
}

/** One packet from one frame. */
export function packet (frame: Buffer): Packet {
  return packetOf([frame], frame.length)
}

/*
 * Hub frames. A hub event is `event`, `id`, then its JSON as one `data:` line
 * (JSON text holds no raw CR or LF). Built here and only here.
 */

const kFrame = Symbol('fastify-sse-hub.frame')
type Framed = HubEvent & { [kFrame]?: Buffer }

/**
 * The SSE frame of a hub event, built at most once per process: the frame is
 * kept on the event (under a private symbol, invisible to backends), so every
 * stream and every replay shares the same bytes.
 */
export function eventFrame (ev: HubEvent): Buffer {
  const framed = ev as Framed
  let frame = framed[kFrame]
  if (frame === undefined) framed[kFrame] = frame = Buffer.from('event: ' + ev.event + '\nid: ' + ev.id + '\ndata: ' + ev.data + '\n\n')
  return frame
}

/**
 * Lets go of the frame cached on `ev`. An event history keeps should not pin
 * its frame bytes once the turn that fanned it out has written them: a
 * replay (rare) frames it again. The slot is set to undefined rather than
 * deleted, so the event keeps its shape.
 */
export function dropFrame (ev: HubEvent): void {
  (ev as Framed)[kFrame] = undefined
}

/** One packet holding the frames of `events`, in order: shared as is by every subscriber of a topic. */
export function eventsPacket (events: readonly HubEvent[]): Packet {
  let bytes = 0
  const frames = new Array<Buffer>(events.length)
  for (let i = 0; i < events.length; i++) {
    frames[i] = eventFrame(events[i])
    bytes += frames[i].length
  }
  return packetOf(frames, bytes)
}

/**
 * The packet of one hub event, straight from its text into one allocation
 * (no frame of its own is kept): for an event written the moment it is
 * published, whose frame nothing else needs.
 */
export function eventPacket (ev: HubEvent): Packet {
  const cached = (ev as Framed)[kFrame]
  if (cached !== undefined) return packetOf([cached], cached.length)
  const text = 'event: ' + ev.event + '\nid: ' + ev.id + '\ndata: ' + ev.data + '\n\n'
  const bytes = Buffer.byteLength(text)
  const head = bytes.toString(16) + '\r\n'
  const chunk = Buffer.allocUnsafe(head.length + bytes + 2)
  const start = chunk.write(head, 0, 'latin1')
  const at = start + chunk.write(text, start)
  chunk[at] = 13
  chunk[at + 1] = 10
  return new ChunkPacket(chunk, start, at)
}

/**
 * The most bytes a hub event with this name and JSON can take once framed:
 * the JSON, the name, and the fixed fields with an id of at most 64 bytes,
 * counted from above (checked before the id exists).
 */
export function framedSize (event: string, json: string): number {
  return Buffer.byteLength(json) + event.length + 96
}

/**
 * 0 when a hub event with this name and JSON fits in `max` bytes once
 * framed, else its `framedSize`. UTF-8 takes at most 3 bytes per UTF-16
 * code unit, so JSON that short is not scanned for its byte length at all.
 */
export function oversize (event: string, json: string, max: number): number {
  if (json.length * 3 + event.length + 96 <= max) return 0
  const bytes = framedSize(event, json)
  return bytes > max ? bytes : 0
}

/** Why a resume could not replay what the client missed. */
export type ResetReason = 'unknown' | 'trimmed' | 'epoch'

/** The `reset` event: `asked` is the client's last id (cut to 64 bytes), `headId` where it now stands. */
export function resetFrame (headId: string, asked: string, reason: ResetReason): Buffer {
  return Buffer.from(`event: reset\nid: ${headId}\ndata: ${JSON.stringify({ lastEventId: asked.slice(0, 64), reason })}\n\n`)
}

/** The event that tells a fresh subscriber its starting id; reserved, so no channel declares it. */
export const HEAD_EVENT = 'sse-hub:head'

/**
 * The frame that tells a fresh subscriber its starting id. An event with
 * (empty) data, not an id-only block: only Chromium adopts the id of a block
 * that dispatches nothing; eventsource, Firefox and Safari need a dispatched
 * event. Nobody listens for this name.
 */
export function headFrame (name: string, headId: string): Buffer {
  return Buffer.from(`event: ${name}\nid: ${headId}\ndata:\n\n`)
}

/** A channel snapshot sent with the head's id; `head` is the channel's precomputed `event: <name>\nid: `. */
export function snapshotFrame (head: string, headId: string, json: string): Buffer {
  return Buffer.from(head + headId + '\ndata: ' + json + '\n\n')
}

/** A lone `retry:` field: when to come back. */
export function retryFrame (ms: number): Buffer {
  return Buffer.from(`retry: ${ms}\n\n`)
}
