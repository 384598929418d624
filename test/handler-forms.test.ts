// Both handler forms users write must work with no warning logged and
// nothing sent twice: Fastify passes a sync handler's non-undefined return
// value to reply.send(), which warns once the reply is hijacked.
import t from 'tap'
import { makeApp, SseClient } from './helpers/index.js'

for (const form of ['sync arrow', 'async arrow', 'async with await']) {
  t.test(form, async t => {
    const { url, logs } = await makeApp(t, app => {
      if (form === 'sync arrow') {
        app.get('/s', (req, reply) => reply.sse(['one', 'two']))
      } else if (form === 'async arrow') {
        app.get('/s', async (req, reply) => reply.sse(['one', 'two']))
      } else {
        app.get('/s', async (req, reply) => { await reply.sse(['one', 'two']) })
      }
    })
    const c = await SseClient.open(url + '/s')
    t.equal(await c.waitEnd(), 'end')
    t.same(c.events.map(e => e.data), ['one', 'two'])
    // Exactly one opening frame: nothing was written twice.
    t.equal(c.text.match(/retry: /g)?.length, 1)
    const warnings = logs.filter(l => l.level >= 40)
    t.same(warnings, [], 'no warning or error logged')
  })
}
