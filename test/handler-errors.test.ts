// A route handler that throws, or whose promise rejects, after reply.sse():
// only that stream ends (the client reconnects), the error is logged through
// Fastify's logger, and every other stream carries on. One that throws while
// its authorisation is still pending gets Fastify's error answer, and the
// authorisation finishing later opens nothing and throws nothing.
import t from 'tap'
import { hasSubscribers } from 'node:diagnostics_channel'
import Fastify from 'fastify'
import { Type } from '@sinclair/typebox'
import ssePlugin from '../lib/index.js'
import { makeApp, SseClient, type LogLine } from './helpers/index.js'

// Fastify builds a tracing store for every request while anyone listens here
// (see lib/handler-errors.ts): the plugin must not, for routes it can wrap.
const HANDLER_ERROR = 'tracing:fastify.request.handler:error'

const failed = (l: LogLine): boolean => l.level === 50 && String(l.msg).includes('route handler failed')

for (const form of ['sync throw', 'async rejection'] as const) {
  t.test(`${form} after reply.sse(): that stream ends, logged; the others carry on`, async t => {
    let ticks!: ReturnType<typeof makeTicks>
    const makeTicks = (app: Parameters<Parameters<typeof makeApp>[1]>[0]) => app.sse.channel('ticks', { events: { tick: Type.Object({ n: Type.Integer() }) } })
    const { app, url, logs, untilLog } = await makeApp(t, app => {
      ticks = makeTicks(app)
      app.get('/ok', (req, reply) => reply.sse({ subscribe: [ticks] }))
      if (form === 'sync throw') {
        app.get('/bad', (req, reply) => {
          reply.sse({ subscribe: [ticks] })
          throw new Error('boom')
        })
      } else {
        app.get('/bad', async (req, reply) => {
          const stream = reply.sse({ subscribe: [ticks] })
          stream.send({ event: 'note', data: 'first' })
          await new Promise(resolve => setImmediate(resolve))
          throw new Error('boom')
        })
      }
    })
    const ok = await SseClient.open(url + '/ok')
    const bad = await SseClient.open(url + '/bad')
    t.equal(bad.status, 200, 'the stream had opened')
    t.equal(await bad.waitEnd(), 'end', 'the failing stream ends cleanly')
    if (form === 'async rejection') t.same(bad.events.map(e => e.data), ['first'], 'what it sent before failing went out')
    const line = await untilLog('the error log line', failed)
    t.equal((line.err as { message?: string }).message, 'boom', 'the handler error is logged')
    t.equal(app.sse.stats().openStreams, 1, 'only the healthy stream is open')
    await ticks.publish('tick', { n: 1 })
    await ok.waitEvents(1)
    t.same(JSON.parse(ok.events[0].data), { n: 1 }, 'the healthy stream still gets events')
    // Fastify notes a rejected handler itself ('Promise errored, but reply.sent = true was set').
    const others = logs.filter(l => l.level >= 50 && !failed(l) && !String(l.msg).startsWith('Promise errored'))
    t.same(others, [], 'no other error logged')
    t.equal(hasSubscribers(HANDLER_ERROR), false, "no listener on Fastify's handler-error channel: other requests pay nothing")
    ok.close()
  })
}

t.test('an async handler that opens its stream after an await, then rejects: that stream ends', async t => {
  const { app, url, untilLog } = await makeApp(t, app => {
    const ticks = app.sse.channel('ticks', { events: { tick: Type.Object({ n: Type.Integer() }) } })
    app.get('/late', async (req, reply) => {
      await new Promise(resolve => setImmediate(resolve))
      reply.sse({ subscribe: [ticks] })
      await new Promise(resolve => setImmediate(resolve))
      throw new Error('late boom')
    })
  })
  const late = await SseClient.open(url + '/late')
  t.equal(late.status, 200, 'the stream had opened')
  t.equal(await late.waitEnd(), 'end', 'it ends once the handler rejects')
  const line = await untilLog('the error log line', failed)
  t.equal((line.err as { message?: string }).message, 'late boom')
  t.equal(app.sse.stats().openStreams, 0)
  t.equal(hasSubscribers(HANDLER_ERROR), false, 'still no channel listener')
})

t.test('reply.sse() from a preHandler hook of a wrapped route: the stream works, no channel listener', async t => {
  let ticks!: { publish: (event: 'tick', data: { n: number }) => Promise<string> }
  const { url } = await makeApp(t, app => {
    const ch = app.sse.channel('ticks', { events: { tick: Type.Object({ n: Type.Integer() }) } })
    ticks = ch
    app.get('/hooked', {
      preHandler: (req, reply, done) => {
        reply.sse({ subscribe: [ch] })
        done()
      }
    }, async () => undefined)
  })
  const c = await SseClient.open(url + '/hooked')
  t.equal(c.status, 200)
  await c.until('head', () => c.heads.length === 1)
  const id = await ticks.publish('tick', { n: 1 })
  await c.waitEvents(1)
  t.equal(c.events[0].id, id, 'it gets events')
  t.equal(hasSubscribers(HANDLER_ERROR), false, 'a hook calling reply.sse() does not turn the fallback on')
  c.close()
})

t.test('a route declared before the plugin loaded (not wrapped): the diagnostics channel is the fallback', async t => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  // register() is queued: this route is declared before the plugin runs, so its onRoute hook never sees it.
  app.register(ssePlugin)
  app.get('/early', async (req, reply) => {
    reply.sse()
    await new Promise(resolve => setImmediate(resolve))
    throw new Error('early boom')
  })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  t.equal(hasSubscribers(HANDLER_ERROR), false, 'nothing listens before a stream opens')
  // The first stream of such a route turns the fallback on (its own request had no tracing store).
  const first = await SseClient.open(url + '/early')
  t.equal(first.status, 200)
  t.equal(hasSubscribers(HANDLER_ERROR), true, 'the fallback listens from then on')
  first.close()
  const second = await SseClient.open(url + '/early')
  t.equal(await second.waitEnd(), 'end', 'a later stream of that route ends when its handler rejects')
  await app.close()
  t.equal(hasSubscribers(HANDLER_ERROR), false, 'the fallback ends with the plugin')
})

t.test('a throw while authorisation is pending: Fastify answers the error; nothing opens later', async t => {
  const unhandled: unknown[] = []
  const onUnhandled = (err: unknown): void => { unhandled.push(err) }
  process.on('unhandledRejection', onUnhandled)
  process.on('uncaughtException', onUnhandled)
  t.teardown(() => {
    process.off('unhandledRejection', onUnhandled)
    process.off('uncaughtException', onUnhandled)
  })
  let connects = 0
  let authorized = 0
  const { app, url } = await makeApp(t, app => {
    const room = app.sse.channel('room', {
      events: { msg: Type.String() },
      // Settles within microtasks of the throw, right after Fastify's error answer.
      authorize: async () => {
        authorized++
        return true
      }
    })
    app.get('/bad', (req, reply) => {
      reply.sse({ subscribe: [room] })
      throw new Error('early')
    })
  })
  app.sse.on('connect', () => { connects++ })
  const bad = await SseClient.open(url + '/bad')
  t.equal(bad.status, 500, "Fastify's error answer")
  await bad.waitEnd()
  t.equal(bad.text.includes('retry:'), false, 'no stream written after the answer')
  t.equal(authorized, 1, 'the authorisation ran')
  t.equal(connects, 0, 'no stream opened on the answered reply')
  t.equal(app.sse.stats().openStreams, 0)
  t.same(unhandled, [], 'nothing thrown into the process')
})
