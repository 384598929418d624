/**
 * Registration: once per context, usable from prefixed child contexts, every
 * bad option refused at register time with a coded error, and misuse of
 * `reply.sse()` refused with a coded error before anything is written.
 */
import t from 'tap'
import Fastify from 'fastify'
import { createParser, type EventSourceMessage } from 'eventsource-parser'
import ssePlugin from '../lib/index.js'
import { makeApp, SseClient } from './helpers/index.js'

t.test('registering the plugin twice in the same context is refused', async t => {
  const app = Fastify()
  t.teardown(() => app.close())
  app.register(ssePlugin)
  app.register(ssePlugin)
  await t.rejects(app.ready(), { code: 'FST_ERR_SSEHUB_ALREADY_REGISTERED', message: /^fastify-sse-hub:/ })
})

t.test('an SSE route in a prefixed child context works', async t => {
  const { app, url } = await makeApp(t, async app => {
    await app.register(async child => {
      child.get('/s', (req, reply) => {
        reply.sse().send({ event: 'child', data: typeof child.sse.stats })
      })
    }, { prefix: '/api' })
  })
  const c = await SseClient.open(url + '/api/s')
  t.teardown(() => c.close())
  t.equal(c.status, 200)
  t.equal(c.headers['content-type'], 'text/event-stream; charset=utf-8')
  await c.waitEvents(1)
  t.same(c.events[0], { event: 'child', data: 'function', id: undefined }, 'reply.sse and fastify.sse reach the child')
  t.equal(app.sse.stats().openStreams, 1, 'the root hub counts the child stream')
})

const badOptions: Array<[string, unknown]> = [
  ['an unknown key', { heartbeats: 1000 }],
  ['heartbeat 0', { heartbeat: 0 }],
  ['heartbeat -1', { heartbeat: -1 }],
  ["heartbeat 'x'", { heartbeat: 'x' }],
  ['retry 1.5', { retry: 1.5 }],
  ['maxBufferedBytes < maxEventBytes', { maxEventBytes: 4096, maxBufferedBytes: 1024 }],
  // A literal `register(plugin, null)` never reaches a plugin: avvio replaces
  // a falsy options argument with {} (avvio/index.js `opts = opts || {}`), so
  // it means "no options". Options given as a function are resolved later and
  // passed through as is: that is how a plugin receives null.
  ['options null (from function options)', () => null]
]

for (const [what, options] of badOptions) {
  t.test(`${what} is refused at register with FST_ERR_SSEHUB_OPTION_INVALID`, async t => {
    // A short pluginTimeout bounds the wait should the error never reach
    // avvio (the plugin would then count as never having called done).
    const app = Fastify({ pluginTimeout: 500 })
    t.teardown(() => app.close())
    app.register(ssePlugin, options as never)
    await t.rejects(app.ready(), { code: 'FST_ERR_SSEHUB_OPTION_INVALID', message: /^fastify-sse-hub:/ })
  })
}

t.test('heartbeat: false and retry: false are accepted', async t => {
  const app = Fastify()
  t.teardown(() => app.close())
  app.register(ssePlugin, { heartbeat: false, retry: false })
  await t.resolves(app.ready())
  t.type(app.sse.stats, 'function')
})

/** Reads an injected SSE payload. */
function parse (payload: string): EventSourceMessage[] {
  const events: EventSourceMessage[] = []
  createParser({ onEvent: e => { events.push(e) } }).feed(payload)
  return events
}

t.test('reply.sse() twice on the same reply throws FST_ERR_SSEHUB_REPLY_SENT', async t => {
  const { app } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      const s = reply.sse()
      let code = 'no error'
      try {
        reply.sse()
      } catch (err) {
        code = (err as { code?: string }).code ?? String(err)
      }
      // Reported through the first stream, which then ends by itself.
      s.send({ event: 'second-call', data: code })
      s.close()
    })
  }, { listen: false })
  const res = await app.inject('/s')
  t.equal(res.statusCode, 200)
  t.same(parse(res.payload).map(e => [e.event, e.data]), [['second-call', 'FST_ERR_SSEHUB_REPLY_SENT']])
  t.equal(app.sse.stats().streamsOpened, 1, 'the second call opened nothing')
})

for (const [what, source] of [['42', 42], ['null', null], ["'text'", 'text']] as const) {
  t.test(`reply.sse(${what}) throws FST_ERR_SSEHUB_SOURCE_INVALID before anything is sent`, async t => {
    const { app } = await makeApp(t, app => {
      app.get('/s', (req, reply) => {
        reply.sse(source as never)
      })
    }, { listen: false })
    const res = await app.inject('/s')
    t.equal(res.statusCode, 500, 'a normal Fastify error response')
    t.match(res.headers['content-type'], /^application\/json/)
    const body = res.json()
    t.equal(body.code, 'FST_ERR_SSEHUB_SOURCE_INVALID')
    t.match(body.message, /^fastify-sse-hub:/)
    t.equal(app.sse.stats().streamsOpened, 0, 'no stream opened')
  })
}
