// A publish is serialised once, however many subscribers it reaches: the
// payload's toJSON() (which JSON.stringify calls once per serialisation)
// runs once for 50 subscribers, and every one of them gets the same bytes.
import t from 'tap'
import { Type } from '@sinclair/typebox'
import { makeApp, SseClient } from './helpers/index.js'

const N = 50

t.test(`${N} subscribers: serialised once per publish, the same frame for all`, async t => {
  const declare = (app: Parameters<Parameters<typeof makeApp>[1]>[0]) =>
    app.sse.channel('once', { events: { v: Type.Object({ n: Type.Integer(), s: Type.String() }) } })
  let channel!: ReturnType<typeof declare>
  const { url } = await makeApp(t, app => {
    channel = declare(app)
    app.get('/s', (req, reply) => reply.sse({ subscribe: [channel] }))
  })
  const clients = await Promise.all(Array.from({ length: N }, () => SseClient.open(url + '/s')))
  await Promise.all(clients.map(c => c.until('the head event', () => c.heads.length === 1)))

  let calls = 0
  const payload = { toJSON () { calls++; return { n: 1, s: 'é\u2028' } } }
  const id = await channel.publish('v', payload as unknown as { n: number, s: string })
  await Promise.all(clients.map(c => c.waitEvents(1)))
  t.equal(calls, 1, `toJSON ran once for ${N} subscribers`)
  const frames = new Set(clients.map(c => c.text.slice(c.text.indexOf('event: v'))))
  t.equal(frames.size, 1, 'every subscriber received the same bytes')
  t.equal([...frames][0], `event: v\nid: ${id}\ndata: {"n":1,"s":"é\u2028"}\n\n`)
  for (const c of clients) c.close()
})
