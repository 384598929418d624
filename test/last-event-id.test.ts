// Last-Event-ID: the header, else the lastEventId query parameter used by
// polyfills; checked for length and characters, never echoed raw.
import t from 'tap'
import { makeApp, SseClient } from './helpers/index.js'

async function ask (t: Parameters<Parameters<typeof t.test>[1]>[0], path: string, headers: Record<string, string> = {}) {
  const { url } = await makeApp(t, app => {
    app.get('/s', (req, reply) => {
      const s = reply.sse()
      s.send({ data: { lastEventId: s.lastEventId ?? null, invalid: s.invalidLastEventId ?? null } })
      s.close()
    })
  })
  const c = await SseClient.open(url + path, headers)
  await c.waitEnd()
  return JSON.parse(c.events[0].data)
}

t.test('from the header', async t => {
  t.same(await ask(t, '/s', { 'last-event-id': 'abc-42' }), { lastEventId: 'abc-42', invalid: null })
})

t.test('from the query when there is no header', async t => {
  t.same(await ask(t, '/s?lastEventId=q-7'), { lastEventId: 'q-7', invalid: null })
})

t.test('the header wins over the query', async t => {
  t.same(await ask(t, '/s?lastEventId=q-7', { 'last-event-id': 'h-1' }), { lastEventId: 'h-1', invalid: null })
})

t.test('absent or empty means none', async t => {
  t.same(await ask(t, '/s'), { lastEventId: null, invalid: null })
  t.same(await ask(t, '/s?lastEventId='), { lastEventId: null, invalid: null })
})

t.test('malformed ids are not trusted and come back sanitised and truncated', async t => {
  const long = 'x'.repeat(129)
  t.same(await ask(t, '/s', { 'last-event-id': long }), { lastEventId: null, invalid: 'x'.repeat(64) })
  t.same(await ask(t, '/s?lastEventId=a%00b%0Ac'), { lastEventId: null, invalid: 'a?b?c' })
  t.same(await ask(t, '/s?lastEventId=' + encodeURIComponent('<script>"é')), { lastEventId: null, invalid: '<script>"?' })
})
