/**
 * The backend contract suite: what every hub backend must do, checked
 * against a real instance of it. A backend author runs it with tap (or any
 * runner with the same few assertions) in a few lines:
 *
 *   import t from 'tap'
 *   import { backendContract } from 'fastify-sse-hub/testing'
 *   backendContract(t, { create: () => myBackend({ url }) })
 *
 * The memory and Redis backends of this package run it the same way.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { Backend, BackendHost, HistoryLimits, HubEvent } from './backend.js'
import { formatId, parseId } from './ids.js'

/** The assertions the suite uses: tap's `Test` has them all. */
export interface ContractTest {
  /** A subtest; its callback gets a test with these same assertions. */
  test (name: string, fn: (t: any) => Promise<void>): unknown
  ok (value: unknown, message: string): unknown
  equal (found: unknown, wanted: unknown, message: string): unknown
  same (found: unknown, wanted: unknown, message: string): unknown
  teardown (fn: () => unknown): void
}

/** Options of `backendContract()`. */
export interface ContractOptions {
  /**
   * Makes a started-from-scratch backend. Called once per test, and twice in
   * a test of two processes: backends made by one `create()` share one store
   * only if `shared` says so.
   */
  create: () => Backend | Promise<Backend>
  /** Backends made by successive `create()` calls share one store (ids, history, delivery), as processes of one hub would. @default false */
  shared?: boolean
  /** History bounds passed to `start()`. @default { history: 50, historyTtl: 0, maxHistoryBytes: 64 MiB, maxIdleTopics: 1000 } */
  limits?: Partial<HistoryLimits>
}

/** A host that records what a backend gives it. */
class Recorder implements BackendHost {
  readonly delivered: HubEvent[] = []
  readonly payloads: unknown[] = []
  interruptions = 0
  readonly epochs: string[] = []
  readonly controls: string[] = []
  private readonly wakers = new Set<() => void>()
  readonly log = silentLogger()

  deliver (event: HubEvent, payload?: unknown): void {
    this.delivered.push(event)
    this.payloads.push(payload)
    this.wake()
  }

  interrupted (): void { this.interruptions++ }
  epochChanged (oldEpoch: string): void { this.epochs.push(oldEpoch) }
  control (message: string): void {
    this.controls.push(message)
    this.wake()
  }

  private wake (): void {
    for (const w of [...this.wakers]) w()
  }

  /** Resolves when `check()` holds (re-checked on every delivery); rejects after `ms`. */
  until (what: string, check: () => boolean, ms = 5_000): Promise<void> {
    if (check()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.wakers.delete(wake); reject(new Error(`timed out after ${ms} ms waiting for ${what}`)) }, ms)
      const wake = (): void => {
        if (!check()) return
        clearTimeout(timer)
        this.wakers.delete(wake)
        resolve()
      }
      this.wakers.add(wake)
    })
  }
}

function silentLogger (): FastifyBaseLogger {
  const noop = (): void => {}
  const log = { level: 'silent', fatal: noop, error: noop, warn: noop, info: noop, debug: noop, trace: noop, silent: noop, child: () => log }
  return log as unknown as FastifyBaseLogger
}

const seqs = (events: readonly HubEvent[]): number[] => events.map(e => e.seq)

/**
 * Runs the backend contract (see `Backend` in this package's `backend` module)
 * as subtests of `t`.
 */
export function backendContract (t: ContractTest, options: ContractOptions): void {
  const limits: HistoryLimits = { history: 50, historyTtl: 0, maxHistoryBytes: 64 * 1024 * 1024, maxIdleTopics: 1000, ...options.limits }
  let topicCount = 0
  /** Topic keys unique per test, so a shared store starts each test clean. */
  const topic = (): string => `contract-${process.pid}-${Date.now().toString(36)}-${++topicCount}`

  async function started (t: ContractTest): Promise<{ backend: Backend, host: Recorder }> {
    const backend = await options.create()
    const host = new Recorder()
    await backend.start(host, limits)
    t.teardown(() => backend.close())
    return { backend, host }
  }

  t.test('start: an epoch that ids can carry', async (t: ContractTest) => {
    const { backend } = await started(t)
    t.ok(parseId(formatId(backend.epoch, 1)) !== null, `epoch ${JSON.stringify(backend.epoch)} makes valid ids`)
  })

  t.test('publish: ids strictly increase across topics, each names one event, and head() follows', async (t: ContractTest) => {
    const { backend } = await started(t)
    const a = topic()
    const b = topic()
    const events: HubEvent[] = []
    for (let i = 0; i < 10; i++) events.push(await backend.publish(i % 2 === 0 ? a : b, 'e', JSON.stringify({ i }), { i }, 'ch'))
    const concurrent = await Promise.all([1, 2, 3, 4, 5].map(i => backend.publish(a, 'e', JSON.stringify({ i }), { i }, 'ch')))
    const all = [...events, ...concurrent]
    t.ok(seqs(events).every((s, i) => i === 0 || s > events[i - 1].seq), 'sequential publishes: increasing seqs')
    t.equal(new Set(seqs(all)).size, all.length, 'no seq twice')
    t.ok(all.every(e => e.id === formatId(backend.epoch, e.seq)), 'id = epoch-seq')
    t.same(all.map(e => [e.topic, e.event, e.channel]).slice(0, 2), [[a, 'e', 'ch'], [b, 'e', 'ch']], 'topic, event and channel kept')
    t.equal(await backend.head(), Math.max(...seqs(all)), 'head() is the highest seq assigned')
  })

  t.test('subscribe: every event of a subscribed topic is delivered once, in seq order, with the local payload', async (t: ContractTest) => {
    const { backend, host } = await started(t)
    const a = topic()
    const b = topic()
    await backend.subscribe(a, 'ch')
    await backend.subscribe(b, 'ch')
    const published = await Promise.all(Array.from({ length: 20 }, (_, i) => backend.publish(i % 3 === 0 ? b : a, 'e', JSON.stringify({ i }), { i }, 'ch')))
    const want = seqs(published).sort((x, y) => x - y)
    const mine = (): HubEvent[] => host.delivered.filter(e => e.topic === a || e.topic === b)
    await host.until('20 deliveries', () => mine().length >= 20)
    t.same(seqs(mine()), want, 'each once, in seq order across both topics')
    t.same(mine().map(e => e.data), want.map(s => published.find(p => p.seq === s)?.data), 'the JSON as published')
  })

  t.test('read: one snapshot of several topics, merged by seq, up to its head', async (t: ContractTest) => {
    const { backend } = await started(t)
    const a = topic()
    const b = topic()
    const c = topic()
    const published: HubEvent[] = []
    for (let i = 0; i < 12; i++) published.push(await backend.publish([a, b, c][i % 3], 'e', JSON.stringify({ i }), undefined, 'ch'))
    const after = published[3].seq
    const read = await backend.read([a, b], after)
    t.equal(read.trimmed, false, 'not trimmed')
    t.ok(read.head >= published[11].seq, 'head covers every publish so far')
    t.same(seqs(read.events), seqs(published.filter(e => (e.topic === a || e.topic === b) && e.seq > after)), 'the events of a and b after the seq, in order')
    const none = await backend.read([topic()], 0)
    t.same({ events: none.events, trimmed: none.trimmed }, { events: [], trimmed: false }, 'a topic never published: nothing, not trimmed')
  })

  t.test('read under concurrent publishing: consistent, and everything up to its head already delivered', async (t: ContractTest) => {
    const { backend, host } = await started(t)
    const topics = [topic(), topic(), topic()]
    for (const k of topics) await backend.subscribe(k, 'ch')
    let publishing = true
    const writer = (async () => {
      for (let i = 0; i < 2000; i++) {
        if (!publishing) break
        await backend.publish(topics[i % 3], 'e', JSON.stringify({ i }), undefined, 'ch')
      }
    })()
    let checked = 0
    for (let round = 0; round < 20; round++) {
      const before = host.delivered.length
      const read = await backend.read(topics, 0)
      if (read.trimmed) continue
      const delivered = host.delivered.filter(e => topics.includes(e.topic) && e.seq <= read.head)
      const readSeqs = seqs(read.events)
      t.ok(readSeqs.every((s, i) => i === 0 || s > readSeqs[i - 1]) && readSeqs.every(s => s <= read.head), `round ${round}: events in order, none past the head`)
      t.same(seqs(delivered), readSeqs, `round ${round}: the read holds exactly what was delivered up to its head (delivered before: ${before})`)
      checked++
    }
    publishing = false
    await writer
    t.ok(checked > 0, `${checked} consistent reads`)
  })

  t.test('trimming: a read from before what history still holds says trimmed, never a partial list', async (t: ContractTest) => {
    const { backend } = await started(t)
    const a = topic()
    const published: HubEvent[] = []
    for (let i = 0; i < limits.history + 10; i++) published.push(await backend.publish(a, 'e', JSON.stringify({ i }), undefined, 'ch'))
    t.equal((await backend.read([a], 0)).trimmed, true, 'from the start: trimmed')
    t.equal((await backend.read([a, topic()], published[5].seq)).trimmed, true, 'trimmed when any topic read was')
    const recent = await backend.read([a], published[published.length - 6].seq)
    t.same({ trimmed: recent.trimmed, seqs: seqs(recent.events) }, { trimmed: false, seqs: seqs(published.slice(-5)) }, 'the last 5: still there')
  })

  t.test('latest: the newest events of a topic, oldest first', async (t: ContractTest) => {
    const { backend } = await started(t)
    const a = topic()
    const published: HubEvent[] = []
    for (let i = 0; i < 8; i++) published.push(await backend.publish(a, 'e', JSON.stringify({ i }), undefined, 'ch'))
    t.same(seqs(await backend.latest(a, 3)), seqs(published.slice(-3)), 'the newest 3, oldest first')
    t.same(await backend.latest(topic(), 3), [], 'nothing for a topic never published')
  })

  t.test('stats: kind and connected', async (t: ContractTest) => {
    const { backend } = await started(t)
    const s = backend.stats()
    t.ok(typeof s.kind === 'string' && s.kind.length > 0, `kind ${s.kind}`)
    t.equal(s.connected, true, 'connected once started')
  })

  if (options.shared === true) {
    t.test('two processes: one order of ids, each event carried to the other, broadcast reaches the other only', async (t: ContractTest) => {
      const one = await started(t)
      const two = await started(t)
      t.equal(one.backend.epoch, two.backend.epoch, 'one epoch')
      const a = topic()
      await two.backend.subscribe(a, 'ch')
      const published = [await one.backend.publish(a, 'e', '1', 1, 'ch'), await two.backend.publish(a, 'e', '2', 2, 'ch'), await one.backend.publish(a, 'e', '3', 3, 'ch')]
      t.ok(published[0].seq < published[1].seq && published[1].seq < published[2].seq, 'seqs increase across processes')
      await two.host.until('3 deliveries', () => two.host.delivered.filter(e => e.topic === a).length >= 3)
      t.same(seqs(two.host.delivered.filter(e => e.topic === a)), seqs(published), 'every event, once, in order, whichever process published it')
      if (one.backend.broadcast !== undefined) {
        await one.backend.broadcast('hello')
        await two.host.until('the control message', () => two.host.controls.includes('hello'))
        t.same(one.host.controls, [], 'not echoed to the sender')
      }
    })
  }
}
