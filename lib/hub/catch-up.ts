/**
 * Catch-up: brings a member up to date before live events flow to it.
 *
 * While a member catches up, the fan-out holds its live events (mercure's
 * LocalSubscriber does the same). The catch-up reads ONE consistent snapshot
 * of the topics it needs (`backend.read`), and merges by seq what it read
 * with what was held or is still waiting in this turn's batches, up to the
 * snapshot's head: every event at or below the head is in one or the other
 * (the backend contract), every later one is held. Then what was held goes
 * out, and live events flow. Nothing is lost or sent twice, and a gap that
 * history no longer covers becomes a `reset`, never a silent skip.
 */
import type { Backend, HistoryRead, HubEvent } from '../backend.js'
import { eventFrame, headFrame, resetFrame, snapshotFrame, HEAD_EVENT, type ResetReason } from '../encoder.js'
import { FST_ERR_SSEHUB_PAYLOAD_INVALID } from '../errors.js'
import { formatId, parseId } from '../ids.js'
import type { ChannelImpl } from '../channel.js'
import { bySeq } from './fanout.js'
import type { Member } from './state.js'
import type { LocalTopic } from './topics.js'

/** A snapshot call's outcome, captured at once so a rejection is never left unhandled. */
export type SnapshotOutcome = { ok: true, channel: ChannelImpl, value: unknown } | { ok: false, error: unknown }

/** Where a catch-up starts from. */
export type From =
  /** A fresh subscriber: the head as of its open, read in the same turn as its snapshots. */
  /** `since: -N` (or `start`: all of history, and a run's first event must be in it, else `reset` first). */
  | { kind: 'fresh', head: Promise<number>, since: number, start: boolean, snapshots: Array<Promise<SnapshotOutcome>>, live: boolean }
  /** A resume: the client's Last-Event-ID (as sent, valid or not). */
  | { kind: 'resume', asked: string }
  /** From the member's last seq: a mid-stream subscribe, or after an outage. */
  | { kind: 'last' }

export class CatchUp {
  /** Bumped when the backend's epoch changes: catch-ups begun before it stop writing. */
  generation = 0
  /** Streams that resumed from history with `Last-Event-ID`. */
  resumes = 0
  /** Streams that got a `reset` instead. */
  resets = 0

  constructor (private readonly backend: Backend) {}

  /**
   * Brings `member` up to date on `topics` (those it just started to follow,
   * or all of them), then lets live events through. Catch-ups of one member
   * run one at a time, in order.
   */
  start (member: Member, topics: LocalTopic[], from: From): Promise<void> {
    member.holding ??= []
    const done = (member.chain ?? Promise.resolve()).then(() => this.run(member, topics, from)).then(() => this.release(member), (err) => {
      // Held events must not go out past history that was never read: that
      // would be a silent gap. Close instead; the client resumes from its last id.
      member.holding = null
      if (!member.stream.ended) {
        member.stream.request.log.error({ err }, 'fastify-sse-hub: could not bring the stream up to date (history, head or snapshot); closing it so the client resumes')
        member.stream.close()
      }
      throw err
    })
    // The chain is kept only while a catch-up runs: an idle stream holds no promise.
    const clear = (): void => { if (member.chain === tail) member.chain = null }
    const tail: Promise<void> = done.then(clear, clear)
    member.chain = tail
    return done
  }

  /** A new epoch: every member is told `reset` and follows the new epoch from its start. */
  epochChanged (members: Iterable<Member>, oldEpoch: string): void {
    this.generation++
    const head = formatId(this.backend.epoch, 0)
    for (const member of members) {
      if (member.stream.ended) continue
      member.holding = member.holding === null ? null : []
      member.holdingBytes = 0
      member.pending = null
      member.stream.push(resetFrame(head, formatId(oldEpoch, member.lastSeq), 'epoch'))
      member.lastSeq = 0
      this.resets++
    }
  }

  private async run (member: Member, topics: LocalTopic[], from: From): Promise<void> {
    const stream = member.stream
    // History is read only once every topic's subscription is in effect: an
    // event is then either in what is read, or delivered live.
    await Promise.all(topics.map(t => t.ready))
    const generation = this.generation
    const stale = (): boolean => stream.ended || generation !== this.generation
    const keys = topics.map(t => t.key)
    let after = member.lastSeq
    let asked: string | null = null
    let reason: ResetReason | null = null
    let read: HistoryRead | null = null
    if (from.kind === 'fresh') {
      after = await from.head
      if (stale()) return
      await this.introduce(member, topics, after, from, generation)
      if (stale()) return
      member.lastSeq = after
      // Every topic was live before the head was read: whatever came after it
      // arrives live, so there is nothing to read in between.
      if (from.live) return
      read = await this.backend.read(keys, after)
      if (read.trimmed) reason = 'trimmed'
    } else if (from.kind === 'resume') {
      asked = from.asked
      const id = parseId(asked)
      if (id === null) reason = 'unknown'
      else if (id.epoch !== this.backend.epoch) reason = 'epoch'
      else {
        after = id.seq
        read = await this.backend.read(keys, after)
        if (after > read.head) reason = 'unknown'
        else if (read.trimmed) reason = 'trimmed'
      }
    } else {
      read = await this.backend.read(keys, after)
      if (read.trimmed) reason = 'trimmed'
    }
    if (stale()) return
    if (reason !== null) {
      const head = read?.head ?? await this.backend.head()
      if (stale()) return
      stream.push(resetFrame(formatId(this.backend.epoch, head), asked ?? formatId(this.backend.epoch, after), reason))
      member.lastSeq = Math.max(member.lastSeq, head)
      this.resets++
      return
    }
    const snapshot = read as HistoryRead
    if (from.kind === 'resume') member.lastSeq = after
    await this.replay(member, this.upTo(member, snapshot), generation)
    if (from.kind === 'resume' && !stale()) this.resumes++
  }

  /**
   * What was read, merged by seq with what this member was delivered up to
   * the snapshot's head on its other topics (held, or still in this turn's
   * batches); what was held past the head stays held. Nothing of these
   * topics at or below the head can arrive later (the backend contract).
   */
  private upTo (member: Member, snapshot: HistoryRead): HubEvent[] {
    const head = snapshot.head
    const merged = snapshot.events.slice()
    const held = member.holding
    if (held !== null && held.length > 0) {
      const later: HubEvent[] = []
      for (const ev of held) (ev.seq <= head ? merged : later).push(ev)
      member.holding = later
      member.holdingBytes = 0
      for (const ev of later) member.holdingBytes += eventFrame(ev).length
    }
    for (const topic of member.topics) {
      for (const ev of topic.batch) if (ev.seq <= head && ev.seq > member.lastSeq) merged.push(ev)
    }
    return merged.sort(bySeq)
  }

  /**
   * What a fresh subscriber gets before live events: the newest `-since`
   * events of each topic (up to `head`), then each channel's snapshot with
   * the head's id, or the head's id alone. Its last id is then `head`.
   */
  private async introduce (member: Member, topics: LocalTopic[], head: number, from: From & { kind: 'fresh' }, generation: number): Promise<void> {
    const stream = member.stream
    const headId = formatId(this.backend.epoch, head)
    if (from.since < 0) {
      const lists = await Promise.all(topics.map(t => this.backend.latest(t.key, -from.since)))
      const events = lists.flat().filter(ev => ev.seq <= head).sort(bySeq)
      member.lastSeq = 0
      if (from.start && await this.runTrimmed(topics, lists)) {
        if (stream.ended || generation !== this.generation) return
        // Placed just before what is left, so a resume from it gets exactly that.
        const before = events.length > 0 ? events[0].seq - 1 : head
        stream.push(resetFrame(formatId(this.backend.epoch, before), formatId(this.backend.epoch, 0), 'trimmed'))
        this.resets++
      }
      await this.replay(member, events, generation)
    }
    const frames: Buffer[] = []
    for (const outcome of await Promise.all(from.snapshots)) {
      if (!outcome.ok) throw outcome.error
      const { channel, value } = outcome
      const snapshot = value as { event?: unknown, data?: unknown } | null
      if (snapshot === null || typeof snapshot !== 'object' || typeof snapshot.event !== 'string') {
        throw new FST_ERR_SSEHUB_PAYLOAD_INVALID('snapshot', channel.name, '/', 'snapshot() must return { event, data }')
      }
      const { json } = channel.serialize(snapshot.event, snapshot.data)
      frames.push(snapshotFrame(channel.head(snapshot.event), headId, json))
    }
    if (stream.ended || generation !== this.generation) return
    if (frames.length === 0) frames.push(headFrame(HEAD_EVENT, headId))
    for (const frame of frames) stream.push(frame)
  }

  /**
   * Whether history lost the start of a run on one of `topics` (its first
   * event is older than what `latest` found): a follow from the start must
   * then be told `reset`, never handed the tail as if it were all.
   */
  private async runTrimmed (topics: LocalTopic[], lists: HubEvent[][]): Promise<boolean> {
    const runs = this.backend.runs
    if (runs === undefined) return false
    const firsts = await Promise.all(topics.map(t => runs.first(t.key)))
    return firsts.some((first, i) => first > 0 && (lists[i].length === 0 || lists[i][0].seq > first))
  }

  /** Writes `events` above the member's last seq, paced by the socket. */
  private async replay (member: Member, events: HubEvent[], generation: number): Promise<void> {
    const stream = member.stream
    for (let i = 0; i < events.length; i++) {
      if (stream.ended || generation !== this.generation) return
      const ev = events[i]
      if (ev.seq <= member.lastSeq) continue
      if (member.send(ev)) return
      if (stream.saturated) await stream.writable()
    }
  }

  /** Ends a catch-up: writes what was held back (paced), then lets live events through. */
  private async release (member: Member): Promise<void> {
    for (;;) {
      const held = member.holding
      if (held === null || member.stream.ended) return
      if (held.length === 0) {
        member.holding = null
        member.holdingBytes = 0
        return
      }
      member.holding = []
      member.holdingBytes = 0
      await this.replay(member, held.sort(bySeq), this.generation)
    }
  }
}
