/**
 * The stream next to the two plugins most apps register globally:
 * @fastify/compress must not compress it (checklist I-04) and @fastify/cors
 * must answer its preflight without opening a stream (C-06) and get its
 * headers onto the stream's response (C-05).
 */
import t from 'tap'
import { request } from 'undici'
import compress from '@fastify/compress'
import cors from '@fastify/cors'
import { makeApp, SseClient } from './helpers/index.js'

const ORIGIN = 'http://example.test'

for (const [name, options] of [
  ['default options', { global: true }],
  // Set to compress every text/* type, text/event-stream included: only the
  // stream bypassing onSend keeps it uncompressed.
  ['customTypes matching text/event-stream', { global: true, customTypes: /^text\// }]
] as const) {
  t.test(`@fastify/compress (${name}) with Accept-Encoding: gzip, br leaves the stream uncompressed`, async t => {
    const { url } = await makeApp(t, async app => {
      await app.register(compress, { ...options, threshold: 0 })
      app.get('/s', (req, reply) => {
        reply.sse().send({ event: 'first', data: 'plain text' })
      })
      app.get('/text', (req, reply) => {
        reply.type('text/plain').send('x'.repeat(2048))
      })
    })
    // Control: compression really is on for ordinary responses of this app.
    const control = await request(url + '/text', { headers: { 'accept-encoding': 'gzip, br' } })
    await control.body.dump()
    t.match(String(control.headers['content-encoding']), /^(gzip|br)$/, 'control: a text/plain reply is compressed')

    const c = await SseClient.open(url + '/s', { 'accept-encoding': 'gzip, br' })
    t.teardown(() => c.close())
    t.equal(c.status, 200)
    t.equal(c.headers['content-encoding'], undefined, 'no content-encoding')
    t.equal(c.headers['content-type'], 'text/event-stream; charset=utf-8')
    await c.waitEvents(1, 2_000)
    t.same(c.events[0], { event: 'first', data: 'plain text', id: undefined })
    t.match(c.text, /^retry: \d+\n\nevent: first\ndata: plain text\n\n/, 'the bytes on the wire are plain text')
    t.equal(c.ending, null, 'the first event arrived while the stream is open, not buffered until the end')
  })
}

t.test('@fastify/cors answers the preflight for Last-Event-ID without opening a stream, and the stream carries CORS headers', async t => {
  // @fastify/cors reflects Access-Control-Request-Headers when `allowedHeaders`
  // is not set (its default), so no extra option is needed for Last-Event-ID.
  let handlerRan = 0
  const { app, url } = await makeApp(t, async app => {
    await app.register(cors, { origin: ORIGIN, credentials: true })
    app.get('/s', (req, reply) => {
      handlerRan++
      reply.sse().send({ data: 'cors ok' })
    })
  })

  const pre = await request(url + '/s', {
    method: 'OPTIONS',
    headers: {
      origin: ORIGIN,
      'access-control-request-method': 'GET',
      'access-control-request-headers': 'last-event-id'
    },
    headersTimeout: 2_000,
    bodyTimeout: 2_000
  })
  await pre.body.dump()
  t.ok(pre.statusCode >= 200 && pre.statusCode < 300, `preflight allowed (${pre.statusCode})`)
  const allowHeaders = String(pre.headers['access-control-allow-headers'] ?? '').toLowerCase().split(/\s*,\s*/)
  t.ok(allowHeaders.includes('last-event-id'), `access-control-allow-headers covers last-event-id (${allowHeaders.join(', ')})`)
  t.equal(pre.headers['access-control-allow-origin'], ORIGIN)
  t.equal(pre.headers['access-control-allow-credentials'], 'true')
  t.notOk(String(pre.headers['content-type'] ?? '').startsWith('text/event-stream'), 'the preflight is not a stream')
  t.equal(handlerRan, 0, 'the preflight never reached the SSE handler')
  t.same({ open: app.sse.stats().openStreams, opened: app.sse.stats().streamsOpened }, { open: 0, opened: 0 }, 'no stream opened')

  const c = await SseClient.open(url + '/s', { origin: ORIGIN })
  t.teardown(() => c.close())
  t.equal(c.status, 200)
  t.equal(c.headers['access-control-allow-origin'], ORIGIN, 'exact origin, not *')
  t.equal(c.headers['access-control-allow-credentials'], 'true')
  await c.waitEvents(1)
  t.equal(c.events[0].data, 'cors ok')
  t.equal(app.sse.stats().streamsOpened, 1)
})
