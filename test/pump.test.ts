/**
 * Unit tests of lib/pump.ts, driven through fake `Pumped` streams: the one
 * flush per turn and its order, deferred cuts, `flushed()`, and the shared
 * timers (heartbeat, lifetime sweep, slow-client watch), which are unref'd
 * and gone once no stream needs them. No server, no sockets; where a timer is
 * the subject the test waits for the call it makes, with a bound.
 */
import t from 'tap'
import { Pump, type Pumped } from '../lib/pump.js'
import { normalizeOptions, type SseHubOptions } from '../lib/options.js'
import { trackLibTimers } from './helpers/timers.js'

/** A stream as the pump sees it, recording every call into a shared log. */
class Fake implements Pumped {
  lastWriteTick = 0
  readonly calls: Array<{ what: string, arg?: number }> = []
  /** Return values of watch(), in order; false once they run out. */
  watchAnswers: boolean[] = []
  onFlush: (() => void) | null = null
  onShutdown: (() => void) | null = null
  private readonly waiters: Array<{ what: string, n: number, resolve: () => void }> = []

  constructor (readonly name: string, readonly log: string[] = []) {}

  private record (what: string, arg?: number): void {
    this.calls.push({ what, arg })
    this.log.push(`${this.name}:${what}`)
    for (const w of [...this.waiters]) {
      if (this.count(w.what) >= w.n) {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        w.resolve()
      }
    }
  }

  count (what: string): number {
    return this.calls.filter(c => c.what === what).length
  }

  args (what: string): number[] {
    return this.calls.filter(c => c.what === what).map(c => c.arg as number)
  }

  /** Resolves once `what` has been called `n` times; rejects after `ms`. */
  async called (what: string, n = 1, ms = 3_000): Promise<void> {
    if (this.count(what) >= n) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      new Promise<void>(resolve => this.waiters.push({ what, n, resolve })),
      new Promise<void>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`${this.name}.${what} not called ${n} times within ${ms} ms`)), ms)
      })
    ]).finally(() => clearTimeout(timer))
  }

  flush (): void { this.record('flush'); this.onFlush?.() }
  /** The pump's tick, when the stream is given one: a heartbeat is then written (and recorded) at that tick. */
  tick: (() => number) | null = null
  heartbeat (): void {
    if (this.tick !== null) this.lastWriteTick = this.tick()
    this.record('heartbeat', this.tick?.())
  }

  onExpire: (() => void) | null = null
  expire (retry: number): void { this.onExpire?.(); this.record('expire', retry) }
  shutdown (retry: number): void { this.record('shutdown', retry); this.onShutdown?.() }
  watch (now: number): boolean { this.record('watch', now); return this.watchAnswers.shift() ?? false }
  cut (): void { this.record('cut') }
}

function pumpWith (options: SseHubOptions = {}): Pump {
  return new Pump(normalizeOptions({ heartbeat: false, ...options }))
}

/** Resolves after everything already queued with setImmediate has run (the pump's flush included). */
function nextTurn (): Promise<void> {
  return new Promise(resolve => setImmediate(resolve))
}

/** Timeout resources that keep the event loop alive. */
function refTimeouts (): number {
  return process.getActiveResourcesInfo().filter(r => r === 'Timeout').length
}

t.test('one flush per turn, however many schedule() calls; the source first, then streams in order', async t => {
  const log: string[] = []
  const pump = pumpWith()
  let sourceFlushes = 0
  pump.source = { flush: () => { sourceFlushes++; log.push('source') } }
  const [a, b, c] = ['a', 'b', 'c'].map(n => new Fake(n, log))
  pump.schedule(b)
  pump.schedule(a)
  pump.requestFlush()
  pump.schedule(c)
  pump.requestFlush()
  t.same(log, [], 'nothing runs synchronously')
  await nextTurn()
  t.same(log, ['source', 'b:flush', 'a:flush', 'c:flush'])
  t.equal(sourceFlushes, 1)
  await nextTurn()
  await nextTurn()
  t.equal(sourceFlushes, 1, 'no flush while nothing was scheduled')
  pump.schedule(a)
  await nextTurn()
  t.same(log.slice(4), ['source', 'a:flush'], 'the next turn flushes again')
})

t.test('a stream the source schedules during its flush is written in the same flush', async t => {
  const log: string[] = []
  const pump = pumpWith()
  const a = new Fake('a', log)
  let batches = 1
  // Like the fan-out: it schedules streams only when it has something for them.
  pump.source = { flush: () => { log.push('source'); if (batches-- > 0) pump.schedule(a) } }
  pump.requestFlush()
  await nextTurn()
  t.same(log.slice(0, 2), ['source', 'a:flush'])
})

t.test('schedule() during a flush runs in a later flush, not this one', async t => {
  const log: string[] = []
  const pump = pumpWith()
  pump.source = { flush: () => { log.push('source') } }
  const a = new Fake('a', log)
  const b = new Fake('b', log)
  a.onFlush = () => { if (a.count('flush') === 1) pump.schedule(b) }
  pump.schedule(a)
  await nextTurn()
  t.same(log, ['source', 'a:flush'], 'b is not flushed inside the flush that scheduled it')
  await nextTurn()
  t.same(log, ['source', 'a:flush', 'source', 'b:flush'])
})

t.test('requestFlush() during a flush (a delivery arriving mid-flush) makes one more flush, in a later turn', async t => {
  const log: string[] = []
  const pump = pumpWith()
  let deliveries = 1
  pump.source = { flush: () => { log.push('source'); if (deliveries-- > 0) pump.requestFlush() } }
  pump.requestFlush()
  await nextTurn()
  t.same(log, ['source'])
  await nextTurn()
  t.same(log, ['source', 'source'])
  await nextTurn()
  t.same(log, ['source', 'source'], 'and no more')
})

t.test('flushed() asks for a flush and resolves after it', async t => {
  const log: string[] = []
  const pump = pumpWith()
  pump.source = { flush: () => { log.push('source') } }
  const a = new Fake('a', log)
  const done = pump.flushed().then(() => { log.push('resolved') })
  pump.schedule(a)
  await done
  t.same(log, ['source', 'a:flush', 'resolved'])
  await Promise.all([pump.flushed(), pump.flushed()])
  t.same(log, ['source', 'a:flush', 'resolved', 'source'], 'two waiters, one more flush')
})

t.test('deferCut(): false outside a flush; inside, the cut runs right after the flush, before flushed() resolves', async t => {
  const log: string[] = []
  const pump = pumpWith()
  pump.source = { flush: () => { log.push('source') } }
  const [a, b, c] = ['a', 'b', 'c'].map(n => new Fake(n, log))
  t.equal(pump.deferCut(b), false, 'outside a flush the caller cuts at once')
  t.equal(b.count('cut'), 0)
  let deferred: boolean | undefined
  a.onFlush = () => { deferred = pump.deferCut(b) }
  // A cut may schedule more writes: those go to a later flush.
  b.cut = () => { log.push('b:cut'); pump.schedule(c) }
  pump.schedule(a)
  pump.schedule(b)
  const done = pump.flushed().then(() => { log.push('resolved') })
  await done
  t.equal(deferred, true)
  t.same(log, ['source', 'a:flush', 'b:flush', 'b:cut', 'resolved'], 'the cut after every stream of the flush')
  await nextTurn()
  t.same(log.slice(5), ['source', 'c:flush'], 'what the cut scheduled, in the next flush')
  t.equal(pump.deferCut(a), false, 'outside again after the flush')
})

t.test('heartbeat: a stream gets one 4 ticks after its last write; one written to every tick gets none', async t => {
  const pump = pumpWith({ heartbeat: 40 }) // a tick every 10 ms
  const quiet = new Fake('quiet')
  quiet.tick = () => pump.tick
  const busy = new Fake('busy')
  Object.defineProperty(busy, 'lastWriteTick', { get: () => pump.tick })
  pump.add(quiet)
  pump.add(busy)
  t.teardown(() => { pump.remove(quiet); pump.remove(busy) })
  await quiet.called('heartbeat', 3)
  t.same(quiet.args('heartbeat'), [4, 8, 12], 'every 4 ticks, counted from the last write')
  t.equal(busy.count('heartbeat'), 0, 'never for a stream that keeps writing')
  // A write two ticks from now (as if traffic came in then): the next comment counts from it.
  quiet.lastWriteTick = pump.tick + 2
  const from = quiet.lastWriteTick
  await quiet.called('heartbeat', 4)
  t.equal(quiet.args('heartbeat')[3], from + 4)
})

t.test('retry delays: retry plus 0..retryJitter for lifetimes, 0..shutdownJitter at shutdown; 3000 when retry is off', async t => {
  const pump = pumpWith({ retry: 1000, retryJitter: 50, shutdownJitter: 400 })
  t.intercept(Math, 'random', { value: () => 0 })
  t.equal(pump.reconnectDelay(), 1000)
  t.equal(pump.reconnectDelay(pump.options.shutdownJitter), 1000)
  t.intercept(Math, 'random', { value: () => 0.999999999 })
  t.equal(pump.reconnectDelay(), 1050)
  t.equal(pump.reconnectDelay(pump.options.shutdownJitter), 1400)
  const off = pumpWith({ retry: false, retryJitter: 0 })
  t.equal(off.retryBase(), 3000)
  t.equal(off.reconnectDelay(), 3000)
})

t.test('expireAfter(): expire() once the time is up, with a retry within retry..retry+retryJitter', async t => {
  const pump = pumpWith({ retry: 1000, retryJitter: 50 })
  const due = Array.from({ length: 20 }, (_, i) => new Fake(`due${i}`))
  const later = new Fake('later')
  for (const f of [...due, later]) {
    // A real stream leaves the pump as it ends.
    f.onExpire = () => pump.remove(f)
    pump.add(f)
  }
  t.teardown(() => pump.remove(later))
  for (const f of due) pump.expireAfter(f, 0)
  pump.expireAfter(later, 60_000)
  await Promise.all(due.map(f => f.called('expire')))
  const retries = due.flatMap(f => f.args('expire'))
  t.equal(retries.length, 20, 'each expired once')
  t.ok(retries.every(r => r >= 1000 && r <= 1050), `retries within 1000..1050: ${retries.join(' ')}`)
  t.ok(new Set(retries).size > 1, 'jittered, not all the same')
  t.equal(later.count('expire'), 0, 'a stream with time left is not expired')
})

t.test('the watch calls watch(now) until it returns false, then stops its timer', async t => {
  const timers = trackLibTimers()
  t.teardown(() => timers.stop())
  const pump = pumpWith()
  const slow = new Fake('slow')
  const quick = new Fake('quick')
  slow.watchAnswers = [true, true, false]
  quick.watchAnswers = [false]
  pump.add(slow)
  pump.add(quick)
  t.teardown(() => { pump.remove(slow); pump.remove(quick) })
  pump.watch(slow)
  pump.watch(quick)
  t.equal(timers.live(), 1, 'one timer watches both')
  await slow.called('watch', 3)
  await nextTurn()
  t.equal(quick.count('watch'), 1, 'left the watch at its first false')
  t.ok(slow.args('watch').every(now => Math.abs(now - Date.now()) < 2_000), 'called with the time')
  t.equal(timers.live(), 0, 'the timer stopped once no stream was left on the watch')
  pump.watch(slow)
  t.equal(timers.live(), 1, 'and starts again for the next')
  pump.remove(slow)
  t.equal(timers.live(), 0, 'removing the last watched stream stops it too')
})

t.test('shutdown() tells every stream to come back after retry..retry+shutdownJitter', async t => {
  const pump = pumpWith({ retry: 2000, retryJitter: 0, shutdownJitter: 300 })
  const streams = Array.from({ length: 30 }, (_, i) => new Fake(`s${i}`))
  // A real stream leaves the set as it ends: shutdown must still reach every one.
  for (const f of streams) { f.onShutdown = () => pump.remove(f); pump.add(f) }
  pump.shutdown()
  t.equal(pump.closing, true)
  t.ok(streams.every(f => f.count('shutdown') === 1), 'every stream, once')
  const delays = streams.flatMap(f => f.args('shutdown'))
  t.ok(delays.every(d => d >= 2000 && d <= 2300), `within 2000..2300: ${delays.join(' ')}`)
  t.ok(new Set(delays).size > 1, 'jittered')
  t.equal(pump.streams.size, 0)
})

t.test('timers: one of each kind, unref\'d, and cleared when the last stream needing it is removed', async t => {
  const timers = trackLibTimers()
  t.teardown(() => timers.stop())
  const pump = pumpWith({ heartbeat: 1000 })
  const [a, b] = [new Fake('a'), new Fake('b')]
  const refBefore = refTimeouts()
  pump.add(a)
  pump.add(b)
  t.equal(timers.live(), 1, 'one heartbeat timer for two streams')
  pump.expireAfter(a, 60_000)
  pump.expireAfter(b, 60_000)
  t.equal(timers.live(), 2, 'one lifetime sweep for both')
  pump.watch(a)
  pump.watch(b)
  t.equal(timers.live(), 3, 'one watch for both')
  t.equal(refTimeouts(), refBefore, 'none keeps the process alive')
  pump.remove(a)
  t.equal(timers.live(), 3, 'b still needs all three')
  pump.remove(b)
  t.equal(timers.live(), 0, 'all cleared with the last stream')
  t.equal(pump.streams.size, 0)
  t.equal(pump.opened, 2)

  const silent = pumpWith({ heartbeat: false })
  silent.add(a)
  t.equal(timers.live(), 0, 'heartbeat: false makes no timer')
  silent.remove(a)
})
