/**
 * Response headers of an SSE stream over HTTP/1.1 (checklist I-01, I-08, C-05)
 * and HEAD on an SSE route.
 */
import t from 'tap'
import { request } from 'undici'
import { makeApp, SseClient } from './helpers/index.js'

t.test('an HTTP/1.1 stream answers 200 with the SSE headers, unframed by length and uncompressed', async t => {
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      const s = reply.sse()
      s.send({ data: 'hi' })
    })
  })
  const c = await SseClient.open(url + '/s')
  t.teardown(() => c.close())
  t.equal(c.status, 200)
  t.equal(c.headers['content-type'], 'text/event-stream; charset=utf-8')
  const cacheControl = String(c.headers['cache-control'])
  t.match(cacheControl, /(^|,)\s*no-cache\s*(,|$)/, 'cache-control has no-cache')
  t.match(cacheControl, /(^|,)\s*no-transform\s*(,|$)/, 'cache-control has no-transform')
  t.equal(c.headers['x-accel-buffering'], 'no')
  t.equal(c.headers['content-length'], undefined, 'no content-length')
  t.equal(c.headers['content-encoding'], undefined, 'no content-encoding')
  t.equal(c.headers['transfer-encoding'], 'chunked', 'framed by Node as chunks')
  // The stream is live, not a finished body that happened to carry the headers.
  await c.waitEvents(1)
  t.equal(c.events[0].data, 'hi')
  t.equal(c.ending, null, 'the body is still open')
})

t.test('headers set by an onRequest hook reach the wire; content-length and content-encoding from a hook do not', async t => {
  const { url } = await makeApp(t, app => {
    app.addHook('onRequest', async (req, reply) => {
      reply.header('x-user', 'alice')
      reply.header('content-length', '5')
      reply.header('content-encoding', 'gzip')
      // A hook must not be able to override the SSE content type either.
      reply.header('content-type', 'application/json')
    })
    app.get('/s', (req, reply) => {
      reply.sse().send({ data: 'plain' })
    })
  })
  const c = await SseClient.open(url + '/s')
  t.teardown(() => c.close())
  t.equal(c.status, 200)
  t.equal(c.headers['x-user'], 'alice', 'a header set by the hook is copied to the raw response')
  t.equal(c.headers['content-length'], undefined, 'no content-length from the hook')
  t.equal(c.headers['content-encoding'], undefined, 'no content-encoding from the hook')
  t.equal(c.headers['content-type'], 'text/event-stream; charset=utf-8')
  await c.waitEvents(1)
  t.equal(c.events[0].data, 'plain', 'the body is the plain event stream (not length-truncated, not claimed gzip)')
  t.equal(c.ending, null)
})

t.test('HEAD on an SSE route answers 200 with the SSE headers and an empty body, at once, and opens no stream', async t => {
  let handlerRan = 0
  const { app, url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      handlerRan++
      reply.sse().send({ data: 'never on HEAD' })
    })
  })
  const started = Date.now()
  // bodyTimeout/headersTimeout bound the wait: a HEAD that streamed would hang here.
  const res = await request(url + '/s', { method: 'HEAD', headersTimeout: 2_000, bodyTimeout: 2_000 })
  const body = await res.body.text()
  const elapsed = Date.now() - started
  t.equal(res.statusCode, 200)
  t.equal(handlerRan, 1, 'the GET handler served the auto-created HEAD route')
  t.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8')
  t.match(String(res.headers['cache-control']), /no-cache/)
  t.match(String(res.headers['cache-control']), /no-transform/)
  t.equal(res.headers['x-accel-buffering'], 'no')
  t.equal(body, '', 'empty body')
  t.ok(elapsed < 1_000, `answered promptly (${elapsed} ms)`)
  const stats = app.sse.stats()
  t.equal(stats.openStreams, 0, 'no stream open')
  t.equal(stats.streamsOpened, 0, 'no stream was ever opened')
  t.equal(stats.writes, 0, 'nothing was written as a stream')
})
