// The handle reply.sse() returns: send/comment/close/onClose/signal/closed,
// and what send does after close (nothing, returns false).
import t from 'tap'
import type { SseStream } from '../lib/index.js'
import { makeApp, SseClient } from './helpers/index.js'

t.test('send and comment queue; close ends cleanly; the handle reports the end', async t => {
  let stream!: SseStream
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { stream = reply.sse() })
  })
  const c = await SseClient.open(url + '/s')
  t.equal(stream.send({ event: 'e', data: 'x' }), true)
  t.equal(stream.comment('note'), true)
  await c.waitEvents(1)
  await c.until('the comment', () => c.comments.includes('note'))

  const order: string[] = []
  stream.onClose(() => order.push('onClose'))
  stream.signal.addEventListener('abort', () => order.push('abort'))
  const closed = stream.closed.then(() => order.push('closed'))
  t.equal(stream.ended, false)
  stream.close()
  t.equal(stream.ended, true)
  t.equal(await c.waitEnd(), 'end', 'a clean end of the body, not a reset')
  await closed
  t.same(order, ['abort', 'onClose', 'closed'])

  t.equal(stream.send({ data: 'late' }), false, 'send after close does nothing')
  t.equal(stream.comment('late'), false)
  stream.close()
  t.equal(stream.signal.aborted, true)
  let lateOnClose = false
  stream.onClose(() => { lateOnClose = true })
  await stream.closed
  await new Promise<void>(resolve => queueMicrotask(resolve))
  t.equal(lateOnClose, true, 'onClose after the end runs at once')
  t.same(c.events.map(e => e.data), ['x'])
})

t.test('send refuses a bad event before writing anything, and the stream stays usable', async t => {
  let stream!: SseStream
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { stream = reply.sse() })
  })
  const c = await SseClient.open(url + '/s')
  t.throws(() => stream.send({ id: 'a\nb', data: 'x' }), { code: 'FST_ERR_SSEHUB_FIELD_INVALID' })
  t.throws(() => stream.send({ event: 'x\r', data: 'x' }), { code: 'FST_ERR_SSEHUB_FIELD_INVALID' })
  t.throws(() => stream.comment('a\nb'), { code: 'FST_ERR_SSEHUB_FIELD_INVALID' })
  t.throws(() => stream.send({ data: 'x'.repeat(2 * 1024 * 1024) }), { code: 'FST_ERR_SSEHUB_EVENT_TOO_LARGE' })
  stream.send({ event: 'ok', data: 'fine' })
  stream.close()
  await c.waitEnd()
  t.same(c.events, [{ event: 'ok', data: 'fine', id: undefined }])
  t.notMatch(c.text, /a\nb|x\r/)
})

t.test('a throwing onClose callback is logged and does not stop the others', async t => {
  let stream!: SseStream
  const { url, logs } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { stream = reply.sse() })
  })
  const c = await SseClient.open(url + '/s')
  await c.until('the opening frame', () => c.retries.length === 1)
  let second = false
  stream.onClose(() => { throw new Error('boom') })
  stream.onClose(() => { second = true })
  c.close()
  await stream.closed
  t.equal(second, true)
  t.ok(logs.some(l => l.level === 50 && /onClose/.test(l.msg)))
})
