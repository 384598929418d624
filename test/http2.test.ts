/**
 * SSE over HTTP/2 (h2c): events arrive, no connection-specific header is sent
 * (checklist I-02, RFC 9113 §8.2.2) and Node's compatibility layer never has
 * to drop one with a warning, and both ways of closing the h2 stream release it.
 */
import t from 'tap'
import http2 from 'node:http2'
import { createParser, type EventSourceMessage } from 'eventsource-parser'
import type { SseStream } from '../lib/index.js'
import { makeApp, once, waitFor, Wakeable } from './helpers/index.js'

/** Warnings emitted by this process while `t` runs. */
function collectWarnings (t: { teardown: (fn: () => void) => void }): Error[] {
  const warnings: Error[] = []
  const on = (w: Error): void => { warnings.push(w) }
  process.on('warning', on)
  t.teardown(() => { process.removeListener('warning', on) })
  return warnings
}

/** An h2 request read by eventsource-parser, with event-driven waits. */
class H2Sse extends Wakeable {
  headers: http2.IncomingHttpHeaders = {}
  readonly events: EventSourceMessage[] = []
  text = ''
  ended = false
  error: Error | null = null
  readonly req: http2.ClientHttp2Stream

  constructor (session: http2.ClientHttp2Session, path: string) {
    super()
    const parser = createParser({ onEvent: (e) => { this.events.push(e) } })
    const decoder = new TextDecoder()
    this.req = session.request({ ':path': path, accept: 'text/event-stream' })
    this.req.on('response', (headers) => { this.headers = headers; this.wake() })
    this.req.on('data', (chunk: Buffer) => {
      const text = decoder.decode(chunk, { stream: true })
      this.text += text
      parser.feed(text)
      this.wake()
    })
    this.req.on('end', () => { this.ended = true; this.wake() })
    this.req.on('error', (err) => { this.error = err; this.wake() })
  }
}

function connect (t: { teardown: (fn: () => void) => void }, url: string): http2.ClientHttp2Session {
  const session = http2.connect(url)
  t.teardown(() => { session.destroy() })
  return session
}

t.test('events arrive over h2c with no connection-specific headers and no warning, even when a hook sets them', async t => {
  const warnings = collectWarnings(t)
  const { url } = await makeApp(t, app => {
    app.addHook('onRequest', async (req, reply) => {
      reply.header('connection', 'keep-alive')
      reply.header('keep-alive', 'timeout=5')
      reply.header('transfer-encoding', 'chunked')
      reply.header('x-user', 'alice')
    })
    app.get('/s', (req, reply) => {
      const s = reply.sse()
      s.send({ event: 'greeting', data: { hello: 'h2' }, id: 1 })
      s.send('line one\nline two')
    })
  }, { fastify: { http2: true } })

  const session = connect(t, url)
  const c = new H2Sse(session, '/s')
  await c.until('2 events', () => c.events.length >= 2)
  t.equal(c.headers[':status'], 200)
  t.equal(c.headers['content-type'], 'text/event-stream; charset=utf-8')
  t.equal(c.headers['x-user'], 'alice', 'other hook headers still reach the wire')
  for (const name of ['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade', 'content-length']) {
    t.equal(c.headers[name], undefined, `no ${name} header`)
  }
  t.same(c.events, [
    { event: 'greeting', data: '{"hello":"h2"}', id: '1' },
    { event: undefined, data: 'line one\nline two', id: undefined }
  ])
  t.match(c.text, /^retry: \d+\n\n/, 'the stream opens with retry:')
  t.equal(c.error, null)
  t.equal(c.ended, false, 'the stream is still open')
  // process.emitWarning emits on the next tick; events have crossed the
  // network since writeHead, so a warning from it would be here by now.
  t.same(warnings.map(w => `${w.name}: ${w.message}`), [], 'no process warning')
})

t.test('closing the stream on the server ends the h2 stream cleanly', async t => {
  let stream: SseStream | undefined
  const { app, url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      stream = reply.sse()
      stream.send({ data: 'last' })
      setImmediate(() => stream!.close())
    })
  }, { fastify: { http2: true } })

  const session = connect(t, url)
  const c = new H2Sse(session, '/s')
  await c.until('the end of the h2 stream', () => c.ended || c.error !== null)
  t.equal(c.error, null, 'no stream error')
  t.equal(c.ended, true, 'the client saw a clean end (END_STREAM)')
  t.same(c.events.map(e => e.data), ['last'], 'what was queued before close() was written')
  if (!c.req.closed) await once(c.req, 'close')
  t.equal(c.req.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'closed with NO_ERROR, not a reset')
  t.equal(session.destroyed, false, 'the session survives the stream')
  t.equal(app.sse.stats().openStreams, 0)
})

t.test('the client closing its h2 stream releases the server stream', async t => {
  let stream: SseStream | undefined
  const { app, url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      stream = reply.sse()
      stream.send({ data: 'first' })
    })
  }, { fastify: { http2: true } })

  const session = connect(t, url)
  const c = new H2Sse(session, '/s')
  await c.until('the first event', () => c.events.length >= 1)
  t.equal(app.sse.stats().openStreams, 1, 'one stream open while the client listens')

  const s = stream!
  c.req.close(http2.constants.NGHTTP2_CANCEL)
  // Woken by the stream's own onClose; bounded by waitFor's timeout.
  await waitFor('the server stream to close', () => s.ended, wake => {
    s.onClose(wake)
    return () => {}
  })
  await s.closed
  t.equal(s.ended, true)
  t.equal(app.sse.stats().openStreams, 0, 'the stream is released')
  t.equal(s.send({ data: 'late' }), false, 'sending after the client left is a no-op')
})
