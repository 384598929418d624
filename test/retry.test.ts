// 'retry:' is sent when a stream opens, jittered per stream so a mass
// reconnect spreads out.
import t from 'tap'
import { makeApp, SseClient } from './helpers/index.js'

t.test('each stream opens with retry in [retry, retry + retryJitter], spread out', async t => {
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { reply.sse() })
  }, { plugin: { retry: 3000, retryJitter: 1000 } })
  const clients = await Promise.all(Array.from({ length: 40 }, () => SseClient.open(url + '/s')))
  await Promise.all(clients.map(c => c.until('retry', () => c.retries.length === 1)))
  const values = clients.map(c => c.retries[0])
  t.ok(values.every(v => v >= 3000 && v <= 4000), values.join(','))
  t.ok(new Set(values).size > 10, `${new Set(values).size} distinct values among 40`)
  t.ok(clients.every(c => c.text.startsWith('retry: ')), 'retry is the first thing on the wire')
  for (const c of clients) c.close()
})

t.test('retryJitter: 0 sends exactly retry', async t => {
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { reply.sse() })
  }, { plugin: { retry: 2500, retryJitter: 0 } })
  const c = await SseClient.open(url + '/s')
  await c.until('retry', () => c.retries.length === 1)
  t.match(c.text, /^retry: 2500\n\n/)
  c.close()
})

t.test('retry: false sends a bare comment as the first byte instead', async t => {
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => { reply.sse() })
  }, { plugin: { retry: false } })
  const c = await SseClient.open(url + '/s')
  await c.until('first byte', () => c.text.length > 0)
  t.equal(c.text, ':\n\n')
  t.same(c.retries, [])
  c.close()
})
