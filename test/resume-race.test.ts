// No race between replay and live (checklist R-05): while a publisher
// publishes continuously on two followed topics (and one that is not
// followed), a client that keeps dropping and resuming with the last id it
// saw gets, across all its connections, every event of the followed topics
// exactly once and in order; never a reset. Also when the reconnects land in
// the middle of a large backlog being replayed, without being cut as slow.
import t, { type Test } from 'tap'
import { SseClient, waitFor } from './helpers/index.js'
import { hubApp, received, seqOf, type Published } from './helpers/hub-app.js'

/** A small seeded PRNG (mulberry32), so a failing run can be replayed. */
function prng (seed: number): (n: number) => number {
  let a = seed >>> 0
  return (n: number) => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return Math.floor((((x ^ (x >>> 14)) >>> 0) / 4294967296) * n)
  }
}

/**
 * Publishes at `perSecond` on random topics of `topics`, from a 2 ms timer
 * that catches up when it fires late (a loaded machine), at most 50 per tick.
 * The timer DRIVES the scenario (it is the traffic); it waits for nothing.
 */
class Publisher {
  count = 0
  startedAt = 0
  stoppedAt = 0
  private timer: NodeJS.Timeout | null = null
  private readonly inflight = new Set<Promise<unknown>>()
  private readonly wakers = new Set<() => void>()
  constructor (
    private readonly publish: (topic: string, n: number, pad?: string) => Promise<Published>,
    private readonly topics: string[],
    private readonly rnd: (n: number) => number,
    private readonly pad?: string
  ) {}

  start (perSecond: number): void {
    this.startedAt = Date.now()
    const first = this.count
    this.timer = setInterval(() => {
      const due = first + Math.floor((Date.now() - this.startedAt) * perSecond / 1000)
      for (let i = 0; i < 50 && this.count < due; i++) void this.one()
    }, 2)
  }

  /** Events per second actually published between start() and stop(). */
  get rate (): number {
    return this.count / (((this.stoppedAt || Date.now()) - this.startedAt) / 1000)
  }

  one (): Promise<unknown> {
    const p = this.publish(this.topics[this.rnd(this.topics.length)], this.count++, this.pad)
    this.inflight.add(p)
    void p.finally(() => {
      this.inflight.delete(p)
      for (const w of [...this.wakers]) w()
    })
    return p
  }

  /** Resolves once `n` more events have been published (event-driven, bounded). */
  more (n: number): Promise<void> {
    const target = this.count + n
    return waitFor(`${n} more publishes`, () => this.count >= target, (w) => {
      this.wakers.add(w)
      return () => this.wakers.delete(w)
    }, 5_000)
  }

  async stop (): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    this.stoppedAt = Date.now()
    await Promise.all([...this.inflight])
  }
}

/** The id of a fresh connection's head event. */
function headOf (c: SseClient): string | undefined {
  return c.heads[0]?.id
}

interface Conn { events: ReturnType<typeof received>, text: string, lastSeq: number }

/**
 * Checks the concatenation of every connection's events against what was
 * published on `follow` after `fromSeq`: exactly once each, in order.
 */
function checkExactlyOnce (t: Test, conns: Conn[], published: Published[], follow: string[], fromSeq: number): void {
  const want = published.filter(p => follow.includes(p.topic) && p.seq > fromSeq).sort((x, y) => x.seq - y.seq)
  const got = conns.flatMap(c => c.events)
  t.equal(conns.filter(c => c.text.includes('event: reset')).length, 0, 'no connection got a reset')
  t.equal(got.filter(e => e.event !== 'e').length, 0, 'only hub events')
  const ids = got.map(e => e.id)
  const seen = new Set<string>()
  const dup = ids.filter(id => seen.has(id) || (seen.add(id), false))
  t.same(dup.slice(0, 10), [], `no event received twice (${dup.length} duplicates)`)
  const wantIds = new Set(want.map(p => p.id))
  const missing = want.filter(p => !seen.has(p.id)).map(p => p.id)
  t.same(missing.slice(0, 10), [], `no event missing (${missing.length} missing)`)
  t.same(got.filter(e => !wantIds.has(e.id)).map(e => e.id).slice(0, 10), [], 'nothing that was not expected (no unfollowed topic, nothing before the start)')
  t.ok(ids.every((id, i) => i === 0 || seqOf(id) > seqOf(ids[i - 1])), 'ids strictly increase across connections')
  // The whole sequence at once: the one assertion that sums up all the above.
  t.same(got.map(e => `${e.id} ${e.topic}:${e.n}`), want.map(p => `${p.id} ${p.topic}:${p.n}`), `exactly once, in order (${want.length} events)`)
}

t.test('continuous publishing on two topics, a client that drops and resumes 8+ times: exactly once, in order', async t => {
  const seed = Number(process.env.RACE_SEED ?? Date.now() % 100000)
  t.comment(`seed ${seed} (RACE_SEED=${seed} to replay)`)
  const rnd = prng(seed)
  const { url, publish, published, app } = await hubApp(t, { history: 5000 })
  const follow = ['a', 'b']
  const pub = new Publisher(publish, ['a', 'b', 'c'], rnd)
  pub.start(800)

  const conns: Conn[] = []
  let lastId: string | undefined
  let startSeq = 0
  const started = Date.now()
  while (conns.length < 8 || Date.now() - started < 1500) {
    const c = await SseClient.open(url + '/follow?t=a,b', lastId === undefined ? {} : { 'last-event-id': lastId })
    t.equal(c.status, 200)
    if (lastId === undefined) {
      await c.until('the head frame', () => headOf(c) !== undefined)
      lastId = headOf(c) as string
      startSeq = seqOf(lastId)
    }
    // Read a random number of events (0 means: drop right after the open).
    const k = rnd(40)
    if (k > 0) await c.waitEvents(k, 5_000)
    const events = received(c.events.slice())
    const text = c.text
    c.close()
    if (events.length > 0) lastId = events[events.length - 1].id
    conns.push({ events, text, lastSeq: seqOf(lastId) })
    // Sometimes stay away while more is published, so that there is a backlog to replay.
    if (rnd(2) === 0) await pub.more(1 + rnd(30))
  }
  await pub.stop()
  // A last event, so that the final connection has something to wait for even
  // if the previous one had already seen everything.
  const lastFollowed = await publish('a', -1)
  // The final connection: everything up to the last published event.
  const c = await SseClient.open(url + '/follow?t=a,b', { 'last-event-id': lastId as string })
  await c.until('the last published event', () => c.events.some(e => e.id === lastFollowed.id), 5_000)
    .catch((err: Error) => t.fail(err.message)) // and still show below what is missing
  conns.push({ events: received(c.events.slice()), text: c.text, lastSeq: lastFollowed.seq })
  c.close()

  const rate = pub.rate
  t.comment(`${published.length} published (${Math.round(rate)}/s), ${conns.length} connections`)
  t.ok(rate > 300, `published at a few hundred events/s at least (${Math.round(rate)}/s)`)
  t.ok(conns.length >= 6, 'at least 5 reconnects')
  checkExactlyOnce(t, conns, published, follow, startSeq)
  t.equal(app.sse.stats().resets, 0)
})

t.test('reconnecting in the middle of a 4 MB replay while publishing continues: exactly once, in order, not cut', async t => {
  const seed = Number(process.env.RACE_SEED ?? Date.now() % 100000)
  t.comment(`seed ${seed} (RACE_SEED=${seed} to replay)`)
  const rnd = prng(seed)
  const pad = 'p'.repeat(2048)
  // maxBufferedBytes well under the 4 MB backlog: the replay must be paced by
  // the socket, not queued whole (which would cut the stream as a slow client).
  const { url, publish, published, app, streams } = await hubApp(t, { history: 5000, maxBufferedBytes: 1024 * 1024 })
  const follow = ['a', 'b']

  // The topics exist before the client's start point (on Redis, a topic
  // created later may be marked trimmed back to an older id: a needless reset).
  for (const topic of ['a', 'b', 'c']) await publish(topic, -2)
  // A first connection gives the start point, then the client goes away.
  const first = await SseClient.open(url + '/follow?t=a,b')
  await first.until('the head frame', () => headOf(first) !== undefined)
  let lastId = headOf(first) as string
  const startSeq = seqOf(lastId)
  first.close()
  // Gone on the server side too before the backlog is made: otherwise the
  // backlog goes live to that dead connection, which is then (rightly) cut.
  await streams[0].closed

  const pub = new Publisher(publish, ['a', 'b', 'c'], rnd, pad)
  pub.start(400) // the live traffic goes on throughout (2 KB events: 800 KB/s)
  // 2000 missed events of 2 KB on the followed topics while it is away,
  // published as a fast stream (yielding to I/O every 100) interleaved with the live traffic.
  for (let i = 0; i < 2000; i++) {
    await publish(i % 3 === 0 ? 'b' : 'a', 100000 + i, pad)
    if (i % 100 === 99) await new Promise(resolve => setImmediate(resolve))
  }
  const backlogEnd = published[published.length - 1].seq

  const conns: Conn[] = []
  let midReplay = 0
  for (;;) {
    const c = await SseClient.open(url + '/follow?t=a,b', { 'last-event-id': lastId })
    t.equal(c.status, 200)
    const k = 150 + rnd(300)
    await c.waitEvents(k, 10_000)
    const events = received(c.events.slice())
    const text = c.text
    c.close()
    lastId = events[events.length - 1].id
    conns.push({ events, text, lastSeq: seqOf(lastId) })
    if (seqOf(lastId) < backlogEnd) midReplay++
    else break
  }
  t.ok(midReplay >= 3, `${midReplay} reconnects in the middle of the backlog`)
  await pub.stop()
  // A last event, so that the final connection has something to wait for even
  // if the previous one had already seen everything.
  const lastFollowed = await publish('a', -1, pad)
  const c = await SseClient.open(url + '/follow?t=a,b', { 'last-event-id': lastId })
  await c.until('the last published event', () => c.events.some(e => e.id === lastFollowed.id), 10_000)
    .catch((err: Error) => t.fail(err.message)) // and still show below what is missing
  conns.push({ events: received(c.events.slice()), text: c.text, lastSeq: lastFollowed.seq })
  c.close()

  t.comment(`${published.length} published, ${conns.length} connections`)
  checkExactlyOnce(t, conns, published, follow, startSeq)
  t.ok(conns.flatMap(x => x.events).filter(e => e.n >= 100000).length === 2000, 'the whole 2000-event backlog arrived')
  t.equal(app.sse.stats().slowClientCuts, 0, 'never cut as a slow client')
  t.equal(app.sse.stats().resets, 0)
})

t.test('fresh subscribers joining while publishing continues: from their head on, every event once, in order', async t => {
  const seed = Number(process.env.RACE_SEED ?? Date.now() % 100000)
  t.comment(`seed ${seed} (RACE_SEED=${seed} to replay)`)
  const rnd = prng(seed)
  const { url, publish, published, app } = await hubApp(t)
  // rooms/a is already followed when the others join (its backend
  // subscription is in effect: no history read between head and live);
  // rooms/b and rooms/c get their first subscriber while events flow.
  for (const topic of ['a', 'b', 'c']) await publish(topic, -2)
  const keeper = await SseClient.open(url + '/follow?t=a')
  await keeper.until('the head frame', () => headOf(keeper) !== undefined)

  const pub = new Publisher(publish, ['a', 'b', 'c'], rnd)
  pub.start(400)
  const joined: Array<{ c: SseClient, follow: string[] }> = []
  for (let i = 0; i < 24; i++) {
    const follow = [['a'], ['a', 'b'], ['b'], ['c', 'a']][i % 4]
    joined.push({ c: await SseClient.open(url + '/follow?t=' + follow.join(',')), follow })
    await pub.more(1 + rnd(8))
  }
  await pub.stop()
  const last = await Promise.all(['a', 'b', 'c'].map(topic => publish(topic, -1)))
  for (const { c, follow } of joined) {
    const want = last.filter(p => follow.includes(p.topic)).map(p => p.id)
    await c.until('the last events', () => want.every(id => c.events.some(e => e.id === id)), 10_000)
    const head = headOf(c)
    t.ok(head !== undefined, 'told its head first')
    checkExactlyOnce(t, [{ events: received(c.events.slice()), text: c.text, lastSeq: 0 }], published, follow, seqOf(head as string))
    c.close()
  }
  keeper.close()
  t.comment(`${published.length} published, ${joined.length} fresh subscribers`)
  t.equal(app.sse.stats().resets, 0)
})
