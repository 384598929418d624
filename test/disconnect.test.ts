// Targeted disconnects (issue 8): streams carry tags given at reply.sse();
// app.sse.disconnect({ tag }) ends exactly the matching streams, each with a
// jittered retry and a clean end, in this process and (Redis backend) on
// every other instance; bad tags are refused with FST_ERR_SSEHUB_TAG_INVALID.
import t, { type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { makeApp, SseClient, finalRetry } from './helpers/index.js'
import { closeClients } from './helpers/closing.js'
import { RedisServer, redisSkip } from './helpers/redis.js'
import { redisBackend } from '../lib/redis.js'
import type { Backend } from '../lib/index.js'

const RETRY = 1_000
const JITTER = 500
const Item = Type.Object({ n: Type.Number() })

const BAD_TAGS: Array<[string, unknown]> = [
  ['a string, not an array', 'user:1'],
  ['an object, not an array', { tag: 'user:1' }],
  ['33 tags', Array.from({ length: 33 }, (_, i) => `t${i}`)],
  ['an empty tag', ['']],
  ['a leading space', [' x']],
  ['a trailing space', ['x ']],
  ['129 characters', ['x'.repeat(129)]],
  ['a newline', ['\n']],
  ['a newline inside', ['user:1\nuser:2']],
  ['a non-ASCII character', ['usér']],
  ['a number', [42]],
  ['null', [null]]
]

/** An app whose /s?tags=a,b route tags its stream; /bad/:i uses BAD_TAGS[i]. */
async function tagApp (t: Test, backend?: Backend) {
  let news!: ReturnType<typeof declare>
  const declare = (app: FastifyInstance) => app.sse.channel('news', { events: { item: Item } })
  const made = await makeApp(t, app => {
    news = declare(app)
    app.get('/s', (req, reply) => {
      const tags = String((req.query as { tags?: string }).tags ?? '').split(',').filter(s => s !== '')
      return reply.sse({ subscribe: [news], tags })
    })
    app.get('/bad/:i', (req, reply) => reply.sse({ subscribe: [news], tags: BAD_TAGS[Number((req.params as { i: string }).i)][1] as string[] }))
  }, { plugin: { retry: RETRY, retryJitter: JITTER, ...(backend === undefined ? {} : { backend }) } })
  return { ...made, news: () => news }
}

async function openReady (url: string): Promise<SseClient> {
  const c = await SseClient.open(url)
  await c.until('head', () => c.heads.length === 1)
  return c
}

t.test('disconnect({ tag }) ends exactly the tagged streams, cleanly with a jittered retry; the others keep receiving', async t => {
  const { app, url, news, logs, untilLog } = await tagApp(t)
  const reasons: string[] = []
  app.sse.on('disconnect', (_stream, reason) => { reasons.push(reason) })
  const u1a = await openReady(url + '/s?tags=user:1,tenant:acme')
  const u1b = await openReady(url + '/s?tags=user:1')
  const u2 = await openReady(url + '/s?tags=user:2,tenant:acme')
  const none = await openReady(url + '/s')

  const first = await news().publish('item', { n: 1 })
  await Promise.all([u1a, u1b, u2, none].map(c => c.waitEvents(1)))

  t.equal(await app.sse.disconnect({ tag: 'user:1' }), 2, 'resolves to the number ended here')
  for (const [name, c] of [['u1a', u1a], ['u1b', u1b]] as const) {
    t.equal(await c.waitEnd(3_000), 'end', `${name}: clean end`)
    const r = finalRetry(c)
    t.ok(r !== null && r >= RETRY && r <= RETRY + JITTER, `${name}: ends with retry ${r} in [${RETRY}, ${RETRY + JITTER}]`)
    t.same(c.events.map(e => e.id), [first], `${name}: nothing else sent`)
  }
  t.same(app.sse.stats().disconnected, 2, 'stats.disconnected')
  t.same(reasons, ['disconnect', 'disconnect'], 'closed with reason disconnect')

  const second = await news().publish('item', { n: 2 })
  await u2.waitEvents(2)
  await none.waitEvents(2)
  t.same(u2.events.map(e => e.id), [first, second], 'user:2 still receives')
  t.same(none.events.map(e => e.id), [first, second], 'the untagged stream still receives')
  t.equal(u2.ending, null)
  t.equal(app.sse.stats().openStreams, 2)

  t.equal(await app.sse.disconnect({ tag: 'user:1' }), 0, 'again: nothing left with that tag')
  t.equal(await app.sse.disconnect({ tag: 'nobody' }), 0, 'an unknown tag ends nothing')
  t.equal(app.sse.stats().disconnected, 2)

  // A stream's other tag still works after one of its streams' tags was used.
  t.equal(await app.sse.disconnect({ tag: 'tenant:acme' }), 1, 'tenant:acme: only u2 was left with it')
  t.equal(await u2.waitEnd(3_000), 'end')
  t.equal(none.ending, null, 'the untagged stream is untouched')
  t.equal(app.sse.stats().disconnected, 3)

  // A reconnect with the same tag is admitted and can be disconnected again.
  const again = await openReady(url + '/s?tags=user:1')
  t.equal(await app.sse.disconnect({ tag: 'user:1' }), 1)
  t.equal(await again.waitEnd(3_000), 'end')
  t.equal(app.sse.stats().disconnected, 4)
  await closeClients(logs, untilLog, u1a, u1b, u2, none, again)
})

t.test('bad tags at reply.sse(): FST_ERR_SSEHUB_TAG_INVALID (500), no stream', async t => {
  const { app, url } = await tagApp(t)
  for (let i = 0; i < BAD_TAGS.length; i++) {
    const [what] = BAD_TAGS[i]
    const before = app.sse.stats()
    const res = await fetch(`${url}/bad/${i}`, { headers: { accept: 'text/event-stream' } })
    t.equal(res.status, 500, `${what}: 500`)
    t.match(res.headers.get('content-type'), /^application\/json/, `${what}: not an event stream`)
    const body = await res.json() as { code: string }
    t.equal(body.code, 'FST_ERR_SSEHUB_TAG_INVALID', `${what}: FST_ERR_SSEHUB_TAG_INVALID`)
    const after = app.sse.stats()
    t.equal(after.streamsOpened, before.streamsOpened, `${what}: no stream opened`)
    t.equal(after.subscriptions, 0, `${what}: no subscription`)
  }
  // The limits themselves are allowed.
  const ok = ['x'.repeat(128), 'a b', '~!"#$%&\'()*+-./:;<=>?@[\\]^_`{|}']
  const c = await SseClient.open(`${url}/s?tags=${encodeURIComponent(ok.join(','))}`)
  t.equal(c.status, 200, '128 characters, an inner space and punctuation are valid tags')
  c.close()
})

t.test('bad tags at disconnect(): FST_ERR_SSEHUB_TAG_INVALID, nothing ended', async t => {
  const { app, url, logs, untilLog } = await tagApp(t)
  const c = await openReady(url + '/s?tags=user:1')
  const bad: unknown[] = ['', ' x', 'x ', 'x'.repeat(129), '\n', 'a\nb', 42, null, undefined, ['user:1']]
  for (const tag of bad) {
    await t.rejects(app.sse.disconnect({ tag: tag as string }), { code: 'FST_ERR_SSEHUB_TAG_INVALID' }, `tag ${JSON.stringify(tag) ?? String(tag)}`)
  }
  for (const selector of [null, undefined, 'user:1', {}]) {
    await t.rejects(app.sse.disconnect(selector as unknown as { tag: string }), { code: 'FST_ERR_SSEHUB_TAG_INVALID' }, `selector ${JSON.stringify(selector) ?? String(selector)}`)
  }
  t.equal(c.ending, null, 'the tagged stream is still open')
  t.equal(app.sse.stats().disconnected, 0)
  await closeClients(logs, untilLog, c)
})

t.test('Redis: disconnect() on instance A ends the tagged streams on B and on A, each once', { skip: redisSkip() }, async t => {
  const redis = await new RedisServer().start()
  t.teardown(() => redis.stop())
  const a = await tagApp(t, redisBackend({ url: redis.url, prefix: 'dc' }))
  const b = await tagApp(t, redisBackend({ url: redis.url, prefix: 'dc' }))
  // Control messages each instance receives from the other.
  const controls = { a: [] as string[], b: [] as string[] }
  for (const [name, app] of [['a', a.app], ['b', b.app]] as const) {
    const host = (app.sse as unknown as { backendHost: { control: (m: string) => void } }).backendHost
    const original = host.control.bind(host)
    host.control = (m: string) => { controls[name].push(m); original(m) }
  }
  const bTagged = await openReady(b.url + '/s?tags=user:1')
  const bOther = await openReady(b.url + '/s?tags=user:2')
  const aTagged = await openReady(a.url + '/s?tags=user:1')
  const aOther = await openReady(a.url + '/s?tags=user:2')

  t.equal(await a.app.sse.disconnect({ tag: 'user:1' }), 1, 'A counts the one it ended itself')
  for (const [name, c] of [['B\'s', bTagged], ['A\'s', aTagged]] as const) {
    t.equal(await c.waitEnd(3_000), 'end', `${name} tagged stream: clean end`)
    const r = finalRetry(c)
    t.ok(r !== null && r >= RETRY && r <= RETRY + JITTER, `${name}: retry ${r} in range`)
  }
  await b.untilLog('B closed it as disconnect', l => l.msg === 'sse stream closed' && l.reason === 'disconnect')
  t.equal(b.app.sse.stats().disconnected, 1, 'B counted it')
  t.equal(a.app.sse.stats().disconnected, 1, 'A counted its own once')
  t.equal(controls.b.length, 1, 'B got one control message')
  t.equal(controls.a.length, 0, 'A did not process its own broadcast')

  // A stream tagged user:1 opened on A after the broadcast is not ended by an echo of it.
  const aLate = await openReady(a.url + '/s?tags=user:1')

  // Untagged-for-this streams on both instances still receive, across Redis.
  const id = await b.news().publish('item', { n: 1 })
  await Promise.all([bOther, aOther, aLate].map(c => c.waitEvents(1)))
  t.same([bOther, aOther, aLate].map(c => c.events.map(e => e.id)), [[id], [id], [id]], 'the others still receive')
  t.equal(aLate.ending, null)
  t.equal(bOther.ending, null)

  // And the other way round: B disconnects user:2, ending A's.
  t.equal(await b.app.sse.disconnect({ tag: 'user:2' }), 1)
  t.equal(await aOther.waitEnd(3_000), 'end', 'A\'s user:2 stream ended by B')
  t.equal(await bOther.waitEnd(3_000), 'end', 'B\'s own user:2 stream ended')
  t.equal(a.app.sse.stats().disconnected, 1 + 1)
  t.equal(aLate.ending, null, 'user:1 on A untouched')
  await closeClients(a.logs, a.untilLog, aTagged, aOther, aLate)
  await closeClients(b.logs, b.untilLog, bTagged, bOther)
})

t.test('a disconnect that runs while a tagged stream is still being authorised reaches it too', async t => {
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  let authorising!: () => void
  const inAuthorize = new Promise<void>(resolve => { authorising = resolve })
  const { url, app } = await makeApp(t, app => {
    const news = app.sse.channel('slow-news', {
      events: { item: Item },
      // Holds the stream in authorisation until the test lets it go.
      authorize: async () => { authorising(); await gate; return true }
    })
    app.get('/s', (req, reply) => reply.sse({ subscribe: [news], tags: ['user:9'] }))
  })
  const pending = SseClient.open(url + '/s')
  await inAuthorize
  t.equal(await app.sse.disconnect({ tag: 'user:9' }), 0, 'nothing open yet to end')
  release()
  const c = await pending
  t.equal(c.status, 200, 'still a 200: a native EventSource must not give up')
  t.equal(await c.waitEnd(), 'end', 'turned away at once instead of opening')
  t.ok(finalRetry(c) !== null, 'told when to retry')
  t.same(c.events, [], 'no event')
  t.equal(app.sse.stats().openStreams, 0)
  t.equal(app.sse.stats().disconnected, 1)
})
