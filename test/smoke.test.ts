import t from 'tap'
import { makeApp, SseClient } from './helpers/index.js'

t.test('a stream sends events and ends', async t => {
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      const s = reply.sse()
      s.send({ event: 'a', data: { x: 1 }, id: 1 })
      s.send('hello\nworld')
      setImmediate(() => s.close())
    })
  })
  const c = await SseClient.open(url + '/s')
  t.equal(await c.waitEnd(), 'end')
  t.same(c.events, [{ event: 'a', data: '{"x":1}', id: '1' }, { event: undefined, data: 'hello\nworld', id: undefined }])
  t.match(c.text, /^retry: \d+\n\n/)
  t.equal(c.headers['content-type'], 'text/event-stream; charset=utf-8')
})
