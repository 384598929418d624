/**
 * Tags and targeted disconnect: `reply.sse({ tags })` labels a stream, and
 * `fastify.sse.disconnect({ tag })` ends every stream with that label, here
 * and, through the backend's broadcast, in every other process.
 */
import { FST_ERR_SSEHUB_TAG_INVALID } from '../errors.js'
import { PRINTABLE } from '../ids.js'
import type { SseStream } from '../stream.js'

const MAX_TAGS = 32

/** Throws a coded error unless `tag` is 1 to 128 printable ASCII characters. */
export function assertTag (tag: unknown): asserts tag is string {
  if (typeof tag !== 'string' || !PRINTABLE.test(tag)) throw new FST_ERR_SSEHUB_TAG_INVALID(JSON.stringify(tag) ?? String(tag))
}

/** The `tags` option of `reply.sse()`, checked. */
export function readTags (tags: unknown): string[] {
  if (tags === undefined) return []
  if (!Array.isArray(tags)) throw new FST_ERR_SSEHUB_TAG_INVALID(`${typeof tags} (tags must be an array)`)
  if (tags.length > MAX_TAGS) throw new FST_ERR_SSEHUB_TAG_INVALID(`${tags.length} tags (at most ${MAX_TAGS})`)
  for (const tag of tags) assertTag(tag)
  return tags
}

export class Tags {
  /** Streams ended by disconnect({ tag }). */
  disconnected = 0
  /** Tag -> the open streams carrying it. */
  private readonly tagged = new Map<string, Set<SseStream>>()
  /** Counts disconnect({ tag }) calls; with disconnectedAt, tells streams still being authorised that they were meant too. */
  private clock = 0
  private readonly disconnectedAt = new Map<string, number>()

  /** @param end ends one stream as disconnected (a jittered `retry:`, then a clean end). */
  constructor (private readonly end: (stream: SseStream) => void) {}

  /** The clock now: a stream admitted at this moment is checked against it once authorised. */
  get now (): number {
    return this.clock
  }

  /** Whether a disconnect of one of `tags` ran since `admitted` (while the stream was being authorised). */
  missed (tags: readonly string[], admitted: number): boolean {
    return admitted !== this.clock && tags.some(tag => (this.disconnectedAt.get(tag) ?? -1) > admitted)
  }

  /** No stream is being authorised any more: the record of recent disconnects can go. */
  forget (): void {
    this.disconnectedAt.clear()
  }

  add (stream: SseStream): void {
    for (const tag of stream.tags) {
      let set = this.tagged.get(tag)
      if (set === undefined) this.tagged.set(tag, set = new Set())
      set.add(stream)
    }
  }

  remove (stream: SseStream): void {
    for (const tag of stream.tags) {
      const set = this.tagged.get(tag)
      if (set !== undefined && set.delete(stream) && set.size === 0) this.tagged.delete(tag)
    }
  }

  /** Ends the streams tagged `tag` in this process; `pending` says streams are being authorised. */
  disconnect (tag: string, pending: boolean): number {
    if (pending) this.disconnectedAt.set(tag, ++this.clock)
    const set = this.tagged.get(tag)
    if (set === undefined) return 0
    let n = 0
    for (const stream of [...set]) {
      if (stream.ended) continue
      this.end(stream)
      n++
    }
    return n
  }

  /** A control message from another process: `{"disconnect": tag}`; anything else is ignored. */
  static parseControl (message: string): string | null {
    let parsed: unknown
    try {
      parsed = JSON.parse(message)
    } catch {
      return null
    }
    const tag = (parsed as { disconnect?: unknown } | null)?.disconnect
    return typeof tag === 'string' && PRINTABLE.test(tag) ? tag : null
  }
}
