/**
 * Unit tests of lib/backends/memory-history.ts and memory-columns.ts: the columns against an
 * array model, and the memory backend's `History` store: its four bounds,
 * the trimmed mark that turns every loss into a `reset`, and its byte count.
 * Pure: time is passed in as `now`, no timers, no server.
 */
import t from 'tap'
import { History } from '../lib/backends/memory-history.js'
import { ENTRY_OVERHEAD, Pool, TopicLog } from '../lib/backends/memory-columns.js'
import type { HubEvent, HistoryLimits } from '../lib/backend.js'
import { prng } from './helpers/prng.js'

/** The per-topic overhead the store counts (lib/backends/memory-history.ts). */
const TOPIC_OVERHEAD = 448

/** Ids are not kept: the store makes them from the seq with its `idOf` (String by default). */
function ev (topic: string, seq: number, data = '{}', event = 'm'): HubEvent {
  return { id: String(seq), seq, topic, channel: topic, event, data }
}

/** The bytes the store counts for one kept event. */
function size (e: HubEvent): number {
  return 2 * (e.data.length + e.event.length) + ENTRY_OVERHEAD
}

const OPEN: HistoryLimits = { history: 1000, historyTtl: 0, maxHistoryBytes: Number.MAX_SAFE_INTEGER, maxIdleTopics: 1000 }

function limits (l: Partial<HistoryLimits>): HistoryLimits {
  return { ...OPEN, ...l }
}

function seqs (events: HubEvent[]): number[] {
  return events.map(e => e.seq)
}

t.test('TopicLog columns: push, shift and read match an array through growth and wrap-around', async t => {
  const random = prng(13)
  const log = new TopicLog('k', 'c', new Pool(1e9, 0, 1e9, true))
  const model: HubEvent[] = []
  let next = 0
  let maxLength = 0
  for (let op = 0; op < 30_000; op++) {
    // Phases of mostly pushing and mostly shifting, so the ring grows, wraps and drains many times.
    const pushBias = Math.floor(op / 2_000) % 2 === 0 ? 0.7 : 0.3
    if (random() < pushBias || model.length === 0) {
      // Seqs past 2^31 too: the seq column must hold doubles.
      const e: HubEvent = { id: String(++next * 262_144), seq: next * 262_144, topic: 'k', channel: 'c', event: `e${next % 3}`, data: `{"n":${next}}` }
      log.push(e.seq, e.event, e.data)
      model.push(e)
    } else {
      const want = model.shift() as HubEvent
      if (log.seqAt(0) !== want.seq) return t.fail(`op ${op}: oldest seq ${log.seqAt(0)}, want ${want.seq}`)
      if (log.sizeAt(0) !== 2 * (want.data.length + want.event.length) + ENTRY_OVERHEAD) return t.fail(`op ${op}: size`)
      log.shift()
    }
    if (log.length !== model.length) return t.fail(`op ${op}: length ${log.length}, want ${model.length}`)
    maxLength = Math.max(maxLength, model.length)
    for (const i of model.length > 0 ? [0, model.length - 1, Math.floor(random() * model.length)] : []) {
      const got = log.eventAt(i, String)
      if (JSON.stringify(got) !== JSON.stringify(model[i])) return t.fail(`op ${op}: event ${i} ${JSON.stringify(got)}, want ${JSON.stringify(model[i])}`)
    }
  }
  t.ok(maxLength > 500, `grew well past its first size (longest ${maxLength})`)
  t.ok(next * 262_144 > 2 ** 31, 'seqs went past 2^31')
  t.pass('30,000 seeded operations agree with the array model')
})

t.test('Fifo columns: the front is dead once its topic dropped that seq or was freed; compaction keeps order', async t => {
  const pool = new Pool(1e9, 0, 1e9, true)
  const a = new TopicLog('a', 'c', pool)
  const b = new TopicLog('b', 'c', pool)
  const fifo = pool.fifo
  for (let s = 1; s <= 3000; s++) fifo.push(s % 2 === 0 ? a : b, s, s * 10)
  t.equal(fifo.frontTopic(), b)
  t.equal(b.holds(1), true, 'the front entry (b, 1) is live')
  b.trimmedUpTo = 1
  fifo.noteDead()
  t.equal(b.holds(1), false, 'b dropped seq 1: dead')
  // a is freed: its 1,500 entries die, counted one by one; once the dead
  // outnumber the live (and are past 1,024) the columns compact.
  a.freed = true
  for (let i = 0; i < 1499; i++) fifo.noteDead()
  t.equal(fifo.length, 3000, 'half dead: not yet compacted')
  fifo.noteDead()
  t.equal(fifo.length, 1499, "compacted to b's live entries")
  t.equal(fifo.dead, 0, 'the dead count restarts at the compaction')
  const seen: number[] = []
  while (fifo.length > 0) {
    t.equal(fifo.frontTopic(), b)
    seen.push(fifo.frontAt())
    fifo.shift()
  }
  t.same(seen, Array.from({ length: 1499 }, (_, i) => (2 * i + 3) * 10), "b's entries, in publish order")
})

t.test('history: each topic keeps its newest `history` events', async t => {
  const h = new History(limits({ history: 3 }))
  for (let s = 1; s <= 5; s++) h.append(ev('a', s), 0)
  h.append(ev('b', 6), 0)
  t.same(seqs(h.latest('a', 10, 0)), [3, 4, 5])
  t.same(seqs(h.latest('b', 10, 0)), [6], 'another topic is not touched')
  t.equal(h.events, 4)
  // Trimmed exactly when an event after the seq was dropped (1 and 2 were).
  for (let s = 0; s <= 6; s++) {
    const got = h.after('a', s, 0)
    t.equal(got.trimmed, s < 2, `after ${s}: trimmed ${String(s < 2)}`)
    t.same(seqs(got.events), s < 2 ? [] : [3, 4, 5].filter(x => x > s), `after ${s}: events`)
  }
})

t.test('history: 0 keeps nothing, and every read says trimmed', async t => {
  const h = new History(limits({ history: 0 }))
  h.setSubscribed('a', true)
  h.append(ev('a', 1), 0)
  h.append(ev('a', 2), 0)
  t.same(h.latest('a', 10, 0), [])
  t.equal(h.after('a', 1, 0).trimmed, true)
  t.equal(h.after('a', 2, 0).trimmed, false, 'nothing after 2 was published')
  t.equal(h.events, 0)
  h.setSubscribed('a', false)
  t.equal(h.bytes, 0)
  t.equal(h.topicCount, 0)
})

t.test('historyTtl: events older than the ttl leave, measured by the `now` passed in', async t => {
  const h = new History(limits({ historyTtl: 1000 }))
  h.setSubscribed('a', true)
  h.append(ev('a', 1), 0)
  h.append(ev('a', 2), 500)
  t.same(seqs(h.after('a', 0, 999).events), [1, 2], '999 ms: both kept')
  const at1000 = h.after('a', 0, 1000)
  t.same(at1000, { events: [], trimmed: true }, '1000 ms: the first is gone, and a read from before it is trimmed')
  t.same(h.after('a', 1, 1000), { events: [ev('a', 2)], trimmed: false }, 'a read after it still gets the second')
  t.same(seqs(h.latest('a', 10, 1499)), [2])
  t.same(h.latest('a', 10, 1500), [], '1500 ms: both gone')
  t.equal(h.after('a', 1, 1500).trimmed, true)
  t.equal(h.events, 0)
  t.equal(h.bytes, TOPIC_OVERHEAD, 'the subscribed topic stays, with no events')
  h.setSubscribed('a', false)
  t.equal(h.bytes, 0)
})

t.test('historyTtl 0 keeps events however old', async t => {
  const h = new History(limits({ historyTtl: 0 }))
  h.append(ev('a', 1), 0)
  t.same(seqs(h.latest('a', 10, 1e12)), [1])
})

// With a small `history`, the per-topic bound drops events from the topic but
// leaves them (marked dropped) in the hub-wide FIFO. The ttl sweep tests the
// age of the FIFO's front entry, which may be one of those dropped ones, and
// then evicts the first LIVE entry behind it, however young.
t.test('historyTtl does not drop an event younger than the ttl', async t => {
  const h = new History(limits({ history: 1, historyTtl: 600 }))
  h.setSubscribed('a', true)
  h.append(ev('a', 1), 0)
  h.append(ev('a', 2), 700)
  // expire() once judged the age of the dropped entry at the FIFO's front and evicted the next live one, however young.
  t.same(seqs(h.latest('a', 10, 700)), [2], 'the event published just now is kept')
  t.same(h.after('a', 1, 700), { events: [ev('a', 2)], trimmed: false }, 'a client that saw 1 gets 2, no reset')
})

t.test('maxHistoryBytes: the oldest events of the hub go first, across topics', async t => {
  const data = 'x'.repeat(100)
  const one = size(ev('a', 1, data))
  const h = new History(limits({ maxHistoryBytes: 2 * TOPIC_OVERHEAD + 3 * one }))
  h.setSubscribed('a', true)
  h.setSubscribed('b', true)
  h.append(ev('a', 1, data), 0)
  h.append(ev('b', 2, data), 0)
  h.append(ev('a', 3, data), 0)
  t.equal(h.bytes, 2 * TOPIC_OVERHEAD + 3 * one, 'exactly at the bound: nothing dropped')
  t.equal(h.events, 3)
  h.append(ev('b', 4, data), 0)
  t.same(seqs(h.latest('a', 10, 0)), [3], 'a lost its oldest, the oldest of the hub')
  t.same(seqs(h.latest('b', 10, 0)), [2, 4])
  t.equal(h.after('a', 0, 0).trimmed, true)
  t.equal(h.after('a', 1, 0).trimmed, false)
  h.append(ev('a', 5, data), 0)
  t.same(seqs(h.latest('b', 10, 0)), [4], 'then b lost 2, now the oldest')
  t.same(seqs(h.latest('a', 10, 0)), [3, 5])
  t.equal(h.after('b', 1, 0).trimmed, true)
  t.equal(h.after('b', 2, 0).trimmed, false)
  t.equal(h.bytes, 2 * TOPIC_OVERHEAD + 3 * one)
})

t.test('maxHistoryBytes: an event bigger than the bound is dropped at once, its topic marked', async t => {
  const h = new History(limits({ maxHistoryBytes: 1000 }))
  h.setSubscribed('a', true)
  h.append(ev('a', 1, 'x'.repeat(1000)), 0)
  t.same(h.latest('a', 10, 0), [])
  t.equal(h.after('a', 0, 0).trimmed, true)
  t.equal(h.bytes, TOPIC_OVERHEAD)
})

t.test('maxIdleTopics: the topic idle longest is freed; subscribed topics never are', async t => {
  const h = new History(limits({ maxIdleTopics: 2 }))
  h.setSubscribed('s', true)
  h.append(ev('s', 1), 0)
  h.append(ev('t1', 2), 0)
  h.append(ev('t2', 3), 0)
  t.equal(h.topicCount, 3)
  h.append(ev('t1', 4), 0) // t1 active again: t2 is now idle longest
  h.append(ev('t3', 5), 0)
  t.equal(h.topicCount, 3, 'two idle topics and the subscribed one')
  t.same(h.latest('t2', 10, 0), [], 't2 was freed')
  t.same(seqs(h.latest('t1', 10, 0)), [2, 4], 't1 was kept')
  t.same(seqs(h.latest('t3', 10, 0)), [5])
  t.same(h.after('t2', 0, 0), { events: [], trimmed: true }, 'a read on the freed topic is trimmed')
  t.same(h.after('t2', 3, 0), { events: [], trimmed: false }, 'unless it had seen everything')
  for (let s = 6; s < 20; s++) h.append(ev(`u${s}`, s), 0)
  t.same(seqs(h.latest('s', 10, 0)), [1], 'the subscribed topic survives any number of idle ones')
  t.equal(h.topicCount, 3)
  h.setSubscribed('s', false)
  t.equal(h.topicCount, 2, 'once unsubscribed it is idle, and the newest idle: the oldest idle one goes')
  t.same(seqs(h.latest('s', 10, 0)), [1])
  t.same(h.latest('u18', 10, 0), [])
})

t.test('maxIdleTopics 0: an unsubscribed topic keeps nothing', async t => {
  const h = new History(limits({ maxIdleTopics: 0 }))
  h.append(ev('a', 1), 0)
  t.equal(h.topicCount, 0)
  t.equal(h.bytes, 0)
  t.equal(h.after('a', 0, 0).trimmed, true)
  h.setSubscribed('b', true)
  h.append(ev('b', 2), 0)
  t.same(seqs(h.latest('b', 10, 0)), [2])
  h.setSubscribed('b', false)
  t.equal(h.topicCount, 0)
  t.equal(h.after('b', 1, 0).trimmed, true)
})

t.test('a topic freed and created again keeps its mark: a read from before the loss is trimmed', async t => {
  const h = new History(limits({ maxIdleTopics: 1 }))
  h.append(ev('a', 1), 0)
  h.append(ev('a', 2), 0)
  h.append(ev('b', 3), 0) // frees a (1 and 2 lost)
  t.same(h.latest('a', 10, 0), [])
  h.setSubscribed('b', true)
  h.append(ev('a', 5), 0) // a again, a new topic
  t.same(seqs(h.latest('a', 10, 0)), [5])
  t.same(h.after('a', 1, 0), { events: [], trimmed: true }, 'seq 2 of its earlier life was lost')
  t.same(h.after('a', 2, 0), { events: [ev('a', 5)], trimmed: false }, 'after 2 nothing was lost')
  // Re-created by a subscriber rather than a publish: the same.
  h.setSubscribed('b', false) // idle: b frees a (idle longest)
  t.same(h.latest('a', 10, 0), [])
  h.setSubscribed('a', true)
  t.same(h.after('a', 4, 0), { events: [], trimmed: true })
  t.same(h.after('a', 5, 0), { events: [], trimmed: false })
})

t.test('after thousands of per-topic drops (the FIFO compacts), byte eviction still takes the oldest kept event', async t => {
  const one = size(ev('a', 1000))
  const h = new History(limits({ history: 2, maxHistoryBytes: 2 * TOPIC_OVERHEAD + 3 * one }))
  h.setSubscribed('a', true)
  h.setSubscribed('b', true)
  // 4-digit seqs: every event the same size.
  for (let s = 1000; s < 4000; s++) h.append(ev('a', s), 0)
  t.same(seqs(h.latest('a', 10, 0)), [3998, 3999])
  t.equal(h.events, 2)
  h.append(ev('b', 4000), 0)
  t.equal(h.bytes, 2 * TOPIC_OVERHEAD + 3 * one, 'at the bound')
  h.append(ev('b', 4001), 0)
  t.same(seqs(h.latest('a', 10, 0)), [3999], 'the oldest kept event of the hub went')
  t.same(seqs(h.latest('b', 10, 0)), [4000, 4001])
  t.equal(h.after('a', 3997, 0).trimmed, true)
  t.equal(h.after('a', 3998, 0).trimmed, false)
  t.equal(h.bytes, 2 * TOPIC_OVERHEAD + 3 * one)
})

t.test('the FIFO compaction keeps publish order across topics', async t => {
  // b and c stay live while 1,500 events of a (history 1) are dropped one by
  // one: the FIFO compacts exactly once (past 1,024 dropped entries). 5-digit
  // seqs: every event the same size.
  const one = size(ev('a', 10000))
  const h = new History(limits({ history: 1, maxHistoryBytes: 4 * TOPIC_OVERHEAD + 3 * one }))
  for (const k of ['a', 'b', 'c', 'd']) h.setSubscribed(k, true)
  h.append(ev('b', 10001), 0)
  h.append(ev('c', 10002), 0)
  for (let s = 10003; s < 11503; s++) h.append(ev('a', s), 0)
  t.equal(h.bytes, 4 * TOPIC_OVERHEAD + 3 * one, 'at the bound')
  h.append(ev('d', 11503), 0) // over by one event: the oldest of the hub goes
  t.same(h.latest('b', 10, 0), [], 'b\'s, the oldest, went')
  t.same(seqs(h.latest('c', 10, 0)), [10002], 'c\'s stays')
  t.same(seqs(h.latest('a', 10, 0)), [11502])
  t.same(seqs(h.latest('d', 10, 0)), [11503])
  t.equal(h.bytes, 4 * TOPIC_OVERHEAD + 3 * one)
})

t.test('latest(): the newest `count` events, oldest first', async t => {
  const h = new History(OPEN)
  for (let s = 1; s <= 5; s++) h.append(ev('a', s * 10), 0)
  t.same(seqs(h.latest('a', 2, 0)), [40, 50])
  t.same(seqs(h.latest('a', 5, 0)), [10, 20, 30, 40, 50])
  t.same(seqs(h.latest('a', 50, 0)), [10, 20, 30, 40, 50])
  t.same(h.latest('a', 0, 0), [])
  t.same(h.latest('nope', 3, 0), [])
  t.same(seqs(h.after('a', 25, 0).events), [30, 40, 50], 'after() between seqs')
  t.same(seqs(h.after('a', 50, 0).events), [])
})

/**
 * Seeded random operations on a few topics under all four bounds, against a
 * model of what the store promises: each topic keeps a suffix of what was
 * published to it (no hole), no more than `history`, nothing older than the
 * ttl; the byte count is the sum of what is kept; after(k, s) is trimmed
 * exactly when an event of k after s was dropped, and otherwise returns the
 * kept events after s.
 */
t.test('seeded random operations keep every promise, and the bytes return to 0', async t => {
  const random = prng(42)
  const keys = ['a', 'b', 'c', 'rooms/1', 'rooms/2', 'x/y/z']
  const lim = limits({ history: 8, historyTtl: 5_000, maxHistoryBytes: 6_000, maxIdleTopics: 2 })
  const h = new History(lim)
  const published = new Map<string, HubEvent[]>(keys.map(k => [k, []]))
  const subscribed = new Set<string>()
  let seq = 0
  let now = 0
  let checks = 0
  const check = (op: number): boolean => {
    let bytes = 0
    let events = 0
    for (const k of keys) {
      const all = published.get(k) as HubEvent[]
      const kept = h.latest(k, 1e9, now)
      const keptSeqs = seqs(kept)
      const allSeqs = seqs(all)
      const tail = allSeqs.slice(allSeqs.length - kept.length)
      if (kept.length > 0 && tail.join() !== keptSeqs.join()) return t.fail(`op ${op}: ${k} kept ${keptSeqs.join()}, not a suffix of ${allSeqs.join()}`) as false
      if (kept.length > lim.history) return t.fail(`op ${op}: ${k} keeps ${kept.length}`) as false
      bytes += kept.reduce((n, e) => n + size(e), 0)
      events += kept.length
      const lost = allSeqs.slice(0, allSeqs.length - kept.length)
      const maxLost = lost.length > 0 ? lost[lost.length - 1] : 0
      for (const s of new Set([0, maxLost - 1, maxLost, ...keptSeqs, seq])) {
        if (s < 0) continue
        const got = h.after(k, s, now)
        checks++
        if (got.trimmed !== (s < maxLost)) return t.fail(`op ${op}: after(${k}, ${s}).trimmed ${String(got.trimmed)}, lost up to ${maxLost}`) as false
        if (!got.trimmed && seqs(got.events).join() !== keptSeqs.filter(x => x > s).join()) return t.fail(`op ${op}: after(${k}, ${s}) events`) as false
      }
    }
    if (h.events !== events) return t.fail(`op ${op}: events ${h.events}, kept ${events}`) as false
    if (h.bytes !== bytes + TOPIC_OVERHEAD * h.topicCount) return t.fail(`op ${op}: bytes ${h.bytes}, want ${bytes + TOPIC_OVERHEAD * h.topicCount}`) as false
    if (h.bytes > lim.maxHistoryBytes + TOPIC_OVERHEAD * keys.length) return t.fail(`op ${op}: bytes ${h.bytes} over the bound`) as false
    return true
  }
  for (let op = 0; op < 1_500; op++) {
    const r = random()
    const k = keys[Math.floor(random() * keys.length)]
    if (r < 0.75) {
      const e = ev(k, ++seq, 'x'.repeat(Math.floor(random() * 300)))
      published.get(k)?.push(e)
      h.append(e, now)
    } else if (r < 0.9) {
      const on = !subscribed.has(k)
      if (on) subscribed.add(k)
      else subscribed.delete(k)
      h.setSubscribed(k, on)
    } else {
      // Time moves only forward: a small step mostly, a big one sometimes. Small
      // steps only, so the ttl bug tested above (which only drops more) cannot
      // make this model check fail for another reason.
      now += random() < 0.9 ? Math.floor(random() * 50) : 2_000
    }
    if (!check(op)) return
  }
  t.ok(checks > 5_000, `${checks} reads checked`)
  for (const k of subscribed) h.setSubscribed(k, false)
  now += 10_000
  h.expire(now)
  t.equal(h.events, 0, 'everything expired')
  t.equal(h.topicCount, 0, 'every topic freed')
  t.equal(h.bytes, 0, 'the byte count is back to 0')
})

t.test('History: a channel with bounds of its own keeps them; other channels neither evict its events nor share its budget', async t => {
  const h = new History(limits({ history: 5, maxHistoryBytes: 40 * (ENTRY_OVERHEAD + 20) + 4 * TOPIC_OVERHEAD, maxIdleTopics: 2, historyTtl: 1_000 }))
  h.setChannel('gen', { limit: 1_000, ttl: 10_000, bytes: Number.MAX_SAFE_INTEGER })
  const gen = (seq: number): HubEvent => ({ ...ev('gen/1', seq), channel: 'gen' })
  let seq = 0
  for (let i = 0; i < 300; i++) h.append(gen(++seq), 0)
  // Plenty of traffic on ordinary topics, over their byte, idle and count bounds.
  for (let i = 0; i < 2_000; i++) h.append(ev(`room/${i % 50}`, ++seq), 0)
  t.equal(h.after('gen/1', 0, 0).events.length, 300, 'all 300 kept: past the plugin\'s 5 per topic, its byte budget and its idle-topic bound')
  t.equal(h.after('gen/1', 0, 0).trimmed, false)
  t.ok(h.latest('room/49', 100, 0).length <= 5, 'ordinary topics keep the plugin\'s count')
  // Ages: the plugin's 1 s drops the ordinary topics; the channel's 10 s keeps its own.
  t.same(h.after('room/49', 0, 2_000).events, [], 'ordinary events expire after the plugin ttl')
  t.equal(h.after('gen/1', 0, 2_000).events.length, 300, 'the channel\'s events outlive it')
  const expired = h.after('gen/1', 0, 10_001)
  t.ok(expired.trimmed, 'past the channel\'s own ttl they are gone, and a resume from before them is told so')
  t.equal(h.events, 0)
})

t.test('History: a channel\'s own ttl counts from the topic\'s last event and drops the topic whole', async t => {
  const h = new History(limits({ historyTtl: 100 }))
  h.setChannel('gen', { limit: 1_000, ttl: 1_000, bytes: Number.MAX_SAFE_INTEGER })
  const gen = (key: string, seq: number): HubEvent => ({ ...ev(key, seq), channel: 'gen' })
  // A generation that runs for 5 s, an event every 100 ms: longer than its ttl.
  let seq = 0
  h.append(gen('gen/short', ++seq), 0)
  for (let at = 0; at <= 5_000; at += 100) h.append(gen('gen/long', ++seq), at)
  t.equal(h.after('gen/long', 0, 5_000).events.length, 51, 'while it runs, its first event is kept, 5 s old')
  t.same(h.after('gen/short', 0, 5_000), { events: [], trimmed: true }, 'a generation idle for its ttl is gone whole, and a resume into it is told so')
  t.equal(h.after('gen/long', 0, 5_999).events.length, 51, 'kept whole up to ttl after its last event')
  t.same(h.after('gen/long', 0, 6_001), { events: [], trimmed: true }, 'then dropped whole')
  t.equal(h.events, 0)
})

t.test('History: history 0 keeps nothing, yet a resume from before an event is told it missed it', async t => {
  const h = new History(limits({ history: 0 }))
  h.setSubscribed('sub', true)
  h.append(ev('sub', 1), 0)
  h.append(ev('free', 2), 0)
  t.equal(h.events, 0, 'no entry kept')
  t.same(h.after('sub', 0, 0), { events: [], trimmed: true }, 'a subscribed topic: trimmed from before its event')
  t.same(h.after('sub', 1, 0), { events: [], trimmed: false }, 'and not from it')
  t.same(h.after('free', 1, 0), { events: [], trimmed: true }, 'a topic nobody follows: its bucket remembers')
  t.same(h.after('free', 2, 0), { events: [], trimmed: false })
})
