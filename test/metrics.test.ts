// Metrics (issue 8): app.sse.metrics() is Prometheus text (0.0.4), scraped
// here over HTTP from a route and parsed line by line: HELP/TYPE before the
// samples of each family, counters named *_total, values equal to stats(),
// one sample per channel, label values escaped. And the connect/disconnect
// events: exactly one of each per admitted stream, with the reason it ended;
// none for shed or refused requests.
import t, { type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { Socket } from 'node:net'
import { makeApp, SseClient, once } from './helpers/index.js'
import { closeClients } from './helpers/closing.js'
import { stalledClient } from './helpers/raw.js'
import { memoryBackend, type Backend, type SseStats, type SseStream } from '../lib/index.js'

type Tap = Test
const Item = Type.Object({ n: Type.Integer() })

interface Sample { name: string, labels: Record<string, string>, value: number }
interface Family { name: string, help: string | null, type: string | null, samples: Sample[] }

/**
 * Parses the Prometheus text exposition format (0.0.4) strictly: every
 * line is a HELP, a TYPE or a sample; each sample belongs to the family
 * whose TYPE came before it (and after which no other family began); label
 * values are unescaped (\\, \", \n). Throws on anything malformed.
 */
function parseExposition (text: string): Map<string, Family> {
  if (!text.endsWith('\n')) throw new Error('the exposition must end with a newline')
  const families = new Map<string, Family>()
  let current: Family | null = null
  const lines = text.slice(0, -1).split('\n')
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1} ${JSON.stringify(line)}`
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line)
      if (m === null) throw new Error(`${where}: not a HELP or TYPE line`)
      const [, kind, name, rest] = m
      let fam = families.get(name)
      if (fam === undefined) {
        families.set(name, fam = { name, help: null, type: null, samples: [] })
      } else if (fam !== current || fam.samples.length > 0) {
        throw new Error(`${where}: family ${name} is split or its metadata follows its samples`)
      }
      current = fam
      if (kind === 'HELP') {
        if (fam.help !== null) throw new Error(`${where}: second HELP`)
        if (/\\(?![\\n])/.test(rest)) throw new Error(`${where}: bad escape in HELP`)
        fam.help = rest
      } else {
        if (fam.type !== null) throw new Error(`${where}: second TYPE`)
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`${where}: unknown type ${rest}`)
        fam.type = rest
      }
      continue
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`${where}: not a sample line`)
    const [, name, labelText, valueText] = m
    if (current === null || current.name !== name || current.type === null) throw new Error(`${where}: sample without a preceding # TYPE for ${name}`)
    const value = Number(valueText)
    if (!/^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$/.test(valueText)) throw new Error(`${where}: bad value`)
    current.samples.push({ name, labels: labelText === undefined ? {} : parseLabels(labelText, where), value })
  }
  return families
}

function parseLabels (text: string, where: string): Record<string, string> {
  const labels: Record<string, string> = {}
  let i = 1 // after {
  while (text[i] !== '}') {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(text.slice(i))
    if (m === null) throw new Error(`${where}: bad label at ${i}`)
    i += m[0].length
    let value = ''
    for (;;) {
      const ch = text[i++]
      if (ch === undefined) throw new Error(`${where}: unterminated label value`)
      if (ch === '"') break
      if (ch === '\n') throw new Error(`${where}: raw newline in a label value`)
      if (ch === '\\') {
        const next = text[i++]
        if (next === '\\') value += '\\'
        else if (next === '"') value += '"'
        else if (next === 'n') value += '\n'
        else throw new Error(`${where}: bad escape \\${next}`)
      } else value += ch
    }
    if (m[1] in labels) throw new Error(`${where}: duplicate label ${m[1]}`)
    labels[m[1]] = value
    if (text[i] === ',') i++
    else if (text[i] !== '}') throw new Error(`${where}: expected , or } at ${i}`)
  }
  if (i !== text.length - 1) throw new Error(`${where}: trailing text after labels`)
  return labels
}

const COUNTERS: Record<string, keyof SseStats> = {
  streams_opened_total: 'streamsOpened',
  published_total: 'published',
  deliveries_total: 'deliveries',
  slow_client_cuts_total: 'slowClientCuts',
  shed_total: 'shed',
  shed_per_client_total: 'shedPerClient',
  expired_total: 'expired',
  disconnected_total: 'disconnected',
  resumes_total: 'resumes',
  resets_total: 'resets',
  writes_total: 'writes',
  heartbeats_total: 'heartbeats'
}
const GAUGES: Record<string, keyof SseStats> = {
  open_streams: 'openStreams',
  subscriptions: 'subscriptions',
  topics: 'topics',
  history_events: 'historyEvents',
  history_bytes: 'historyBytes'
}

/** An app with /metrics (noting stats() in the same turn as the scrape) and /s?rooms=a,b&news=1. */
async function metricsApp (t: Tap, plugin: Record<string, unknown> = {}) {
  const scraped: { stats: SseStats | null } = { stats: null }
  let news!: ReturnType<typeof declareNews>
  let rooms!: ReturnType<typeof declareRooms>
  const declareNews = (app: FastifyInstance) => app.sse.channel('news', { events: { item: Item } })
  const declareRooms = (app: FastifyInstance) => app.sse.channel('rooms/:roomId', { events: { item: Item } })
  const made = await makeApp(t, app => {
    news = declareNews(app)
    rooms = declareRooms(app)
    app.get('/metrics', (req, reply) => {
      scraped.stats = app.sse.stats()
      return reply.type('text/plain; version=0.0.4').send(app.sse.metrics())
    })
    app.get('/s', (req, reply) => {
      const q = req.query as { rooms?: string, news?: string }
      const subs = [...(q.news === undefined ? [] : [news]), ...(q.rooms === undefined ? [] : q.rooms.split(',').map(roomId => rooms.topic({ roomId })))]
      return reply.sse({ subscribe: subs })
    })
  }, { plugin: { heartbeat: false, ...plugin } })
  const scrape = async (): Promise<{ families: Map<string, Family>, stats: SseStats, text: string }> => {
    const res = await fetch(made.url + '/metrics')
    if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`)
    const text = await res.text()
    if (!/^text\/plain; version=0\.0\.4/.test(res.headers.get('content-type') ?? '')) throw new Error('content type ' + res.headers.get('content-type'))
    return { families: parseExposition(text), stats: scraped.stats as SseStats, text }
  }
  return { ...made, scrape, news: () => news, rooms: () => rooms }
}

const one = (families: Map<string, Family>, name: string): number => {
  const fam = families.get('sse_hub_' + name)
  if (fam === undefined || fam.samples.length !== 1) throw new Error(`sse_hub_${name}: expected one sample`)
  return fam.samples[0].value
}

t.test('a scrape after real traffic parses cleanly and equals stats()', async t => {
  const { app, url, scrape, news, rooms, logs, untilLog } = await metricsApp(t, {
    maxConnections: 6,
    maxStreamsPerClient: 2,
    clientKey: (req: { headers: Record<string, unknown> }) => String(req.headers['x-user'])
  })
  const open = async (path: string, user: string, headers: Record<string, string> = {}): Promise<SseClient> => {
    const c = await SseClient.open(url + path, { 'x-user': user, ...headers })
    await c.until('head, reset or end', () => c.heads.length > 0 || c.events.length > 0 || c.ending !== null)
    return c
  }
  let connects = 0
  app.sse.on('connect', () => { connects++ })
  const empty = await scrape()
  t.equal(one(empty.families, 'open_streams'), 0)
  t.same(empty.families.get('sse_hub_channel_topics')?.samples, [], 'no channel has topics yet: the family has no samples')

  const a1 = await open('/s?news=1', 'alice')
  const a2 = await open('/s?news=1&rooms=x', 'alice')
  const b1 = await open('/s?rooms=x,y', 'bob')
  const a3 = await open('/s?news=1', 'alice') // over alice's 2: shedPerClient
  const published = [await news().publish('item', { n: 1 }), await rooms().topic({ roomId: 'x' }).publish('item', { n: 2 }), await rooms().topic({ roomId: 'y' }).publish('item', { n: 3 })]
  await a1.waitEvents(1)
  await a2.waitEvents(2)
  await b1.waitEvents(2)
  // b1 leaves and resumes with its last id; c1 comes back with an id from nowhere: a reset.
  await closeClients(logs, untilLog, b1)
  const late = await rooms().topic({ roomId: 'y' }).publish('item', { n: 4 })
  const b2 = await open('/s?rooms=x,y', 'bob', { 'last-event-id': b1.lastEventId as string })
  await b2.waitEvents(1)
  t.equal(b2.events[0].id, late, 'resumed')
  const c1 = await open('/s?news=1', 'carol', { 'last-event-id': 'zz-1' })
  t.equal(c1.events[0]?.event, 'reset', 'reset')
  const d = [await open('/s?news=1', 'dan'), await open('/s?news=1', 'dan'), await open('/s?news=1', 'erin')]
  // 6 open now (a1, a2, b2, c1, dan x2): erin is over maxConnections.
  t.equal(d[2].heads.length, 0, 'erin shed')

  const { families, stats, text } = await scrape()
  t.comment(text.split('\n').filter(l => !l.startsWith('#')).join('\n'))
  t.match(stats, { openStreams: 6, shed: 1, shedPerClient: 1, resumes: 1, resets: 1, published: 4 }, 'the traffic is what the test made')

  for (const fam of families.values()) {
    t.ok(fam.name.startsWith('sse_hub_'), `${fam.name}: prefixed`)
    t.ok(fam.help !== null && fam.help.length > 0, `${fam.name}: has HELP`)
    t.ok(fam.type === 'counter' || fam.type === 'gauge', `${fam.name}: counter or gauge`)
    t.equal(fam.type === 'counter', fam.name.endsWith('_total'), `${fam.name}: named _total iff a counter`)
  }
  for (const [name, key] of Object.entries(COUNTERS)) {
    t.equal(families.get('sse_hub_' + name)?.type, 'counter', `${name} is a counter`)
    t.equal(one(families, name), stats[key], `${name} = stats().${key} (${String(stats[key])})`)
  }
  for (const [name, key] of Object.entries(GAUGES)) {
    t.equal(families.get('sse_hub_' + name)?.type, 'gauge', `${name} is a gauge`)
    t.equal(one(families, name), stats[key], `${name} = stats().${key} (${String(stats[key])})`)
  }
  t.same(families.get('sse_hub_backend_connected')?.samples, [{ name: 'sse_hub_backend_connected', labels: { kind: stats.backend.kind }, value: 1 }], 'backend_connected{kind}')
  for (const fam of ['channel_topics', 'channel_subscribers'] as const) {
    const samples = families.get('sse_hub_' + fam)?.samples ?? []
    const byChannel = Object.fromEntries(samples.map(s => [s.labels.channel, s.value]))
    const expected = Object.fromEntries(Object.entries(stats.channels).map(([name, c]) => [name, fam === 'channel_topics' ? c.topics : c.subscribers]))
    t.same(byChannel, expected, `${fam}: one sample per channel, equal to stats().channels`)
    t.same(samples.map(s => Object.keys(s.labels)), samples.map(() => ['channel']), `${fam}: labelled by channel only`)
  }
  // Independently of stats(): news has 1 topic and 4 subscribers (a1, a2, c1, dan x2 -> 5); rooms has x and y.
  const subs = Object.fromEntries((families.get('sse_hub_channel_subscribers')?.samples ?? []).map(s => [s.labels.channel, s.value]))
  t.same(subs, { news: 5, 'rooms/:roomId': 3 }, 'subscribers per channel: news 5 (a1, a2, c1, dan x2), rooms 3 (a2 x, b2 x and y)')
  const topics = Object.fromEntries((families.get('sse_hub_channel_topics')?.samples ?? []).map(s => [s.labels.channel, s.value]))
  t.same(topics, { news: 1, 'rooms/:roomId': 2 })
  // The memory backend keeps history here; others report 0 (their history lives elsewhere).
  if (stats.backend.kind === 'memory') t.ok(one(families, 'history_events') >= published.length + 1, 'history counted')
  // Live fan-out: news n1 -> a1, a2; rooms/x n2 -> a2, b1; rooms/y n3 -> b1.
  t.ok(one(families, 'deliveries_total') >= 5, `deliveries counted (${one(families, 'deliveries_total')})`)
  t.ok(one(families, 'writes_total') > 0, 'writes counted')
  t.equal(one(families, 'streams_opened_total'), connects, `streams_opened_total = the ${connects} admitted (connect events), not the shed ones`)
  t.equal(connects, 7, 'a1, a2, b1, b2, c1, dan x2')

  await closeClients(logs, untilLog, a1, a2, a3, b2, c1, ...d)
  const after = await scrape()
  t.equal(one(after.families, 'open_streams'), 0, 'open_streams back to 0')
  t.equal(one(after.families, 'subscriptions'), 0)
  t.equal(one(after.families, 'resumes_total'), 1, 'counters do not go down')
  t.equal(app.sse.stats().openStreams, 0)
})

t.test('label values are escaped: backslash, double quote and newline', async t => {
  const kind = 'we"ird\\kind\nline2'
  const inner = memoryBackend()
  // A backend that reports an awkward kind: the only label value a user can make hold these characters.
  const backend = new Proxy(inner, {
    get (target, prop, receiver) {
      if (prop === 'stats') return () => ({ ...target.stats(), kind })
      const value = Reflect.get(target, prop, receiver)
      return typeof value === 'function' ? value.bind(target) : value
    }
  }) as Backend
  const { scrape } = await metricsApp(t, { backend })
  const { families, text } = await scrape()
  t.ok(text.includes('sse_hub_backend_connected{kind="we\\"ird\\\\kind\\nline2"} 1\n'), 'escaped on the wire as the format says')
  t.same(families.get('sse_hub_backend_connected')?.samples[0].labels, { kind }, 'parses back to the original value')
})

t.test('connect/disconnect: one of each per admitted stream, with its reason; none for shed or refused requests', async t => {
  const manual = new Map<string, SseStream>()
  let news!: ReturnType<typeof declare>
  const declare = (app: FastifyInstance) => app.sse.channel('news', {
    events: { item: Item, blob: Type.Object({ s: Type.String() }) },
    authorize: req => req.headers['x-user'] !== 'mallory'
  })
  const { app, url, logs, untilLog } = await makeApp(t, app => {
    news = declare(app)
    app.get('/s', (req, reply) => {
      const q = req.query as { tag?: string, life?: string, name?: string }
      const stream = reply.sse({ subscribe: [news], ...(q.tag === undefined ? {} : { tags: [q.tag] }), ...(q.life === undefined ? {} : { maxLifetime: Number(q.life) }) })
      if (q.name !== undefined) manual.set(q.name, stream)
      return stream
    })
    app.get('/finite', (req, reply) => reply.sse([{ data: 'one' }, { data: 'two' }]))
  }, { plugin: { heartbeat: false, maxStreamsPerClient: 1, clientKey: req => String(req.headers['x-user']), maxBufferedBytes: 64 * 1024, maxEventBytes: 64 * 1024 } })

  const events: Array<['connect' | 'disconnect', SseStream, string?]> = []
  app.sse.on('connect', stream => { events.push(['connect', stream]) })
  app.sse.on('disconnect', (stream, reason) => { events.push(['disconnect', stream, reason]) })
  const reasonOf = (s: SseStream | undefined): Array<string | undefined> => events.filter(e => e[0] === 'disconnect' && e[1] === s).map(e => e[2])
  const ready = async (path: string, user: string): Promise<SseClient> => {
    const c = await SseClient.open(url + path, { 'x-user': user })
    await c.until('head or end', () => c.heads.length > 0 || c.ending !== null)
    return c
  }
  const connectsBefore = (): number => events.filter(e => e[0] === 'connect').length

  // client: the client goes away.
  const gone = await ready('/s?name=gone', 'u1')
  t.equal(connectsBefore(), 1, 'connect on open')
  t.equal(events[0][1], manual.get('gone'), 'with the stream handle')
  await closeClients(logs, untilLog, gone)
  t.same(reasonOf(manual.get('gone')), ['client'], 'client')

  // server: the app closes it.
  const closed = await ready('/s?name=closed', 'u2')
  manual.get('closed')?.close()
  t.equal(await closed.waitEnd(), 'end')
  t.same(reasonOf(manual.get('closed')), ['server'], 'server')

  // expired.
  const expired = await ready('/s?name=expired&life=200', 'u3')
  t.equal(await expired.waitEnd(3_000), 'end')
  t.same(reasonOf(manual.get('expired')), ['expired'], 'expired')

  // disconnect.
  const tagged = await ready('/s?name=tagged&tag=user:4', 'u4')
  t.equal(await app.sse.disconnect({ tag: 'user:4' }), 1)
  t.equal(await tagged.waitEnd(), 'end')
  t.same(reasonOf(manual.get('tagged')), ['disconnect'], 'disconnect')

  // end: a finite source ran out.
  const finite = await SseClient.open(url + '/finite', { 'x-user': 'u5' })
  t.equal(await finite.waitEnd(), 'end')
  const finiteStream = events.filter(e => e[0] === 'connect').at(-1)?.[1]
  t.same(reasonOf(finiteStream), ['end'], 'end')

  // slow: a client that never reads is cut.
  const opened = once(app.sse, 'connect')
  const socket: Socket = await stalledClient(url, '/s?name=slow')
  t.teardown(() => { socket.destroy() })
  await opened
  const slow = manual.get('slow') as SseStream
  const blob = 'x'.repeat(32 * 1024)
  while (!slow.ended) {
    await news.publish('blob', { s: blob })
    await new Promise<void>(resolve => setImmediate(resolve))
  }
  t.same(reasonOf(slow), ['slow'], 'slow')

  // Shed (u1 has a stream open) and refused (mallory) requests announce nothing.
  const count = events.length
  const holder = await ready('/s?name=holder', 'u1')
  t.equal(events.length, count + 1, 'the holder connected')
  const shed = await SseClient.open(url + '/s?name=shed', { 'x-user': 'u1' })
  t.equal(await shed.waitEnd(), 'end', 'shed')
  const refused = await fetch(url + '/s', { headers: { accept: 'text/event-stream', 'x-user': 'mallory' } })
  t.equal(refused.status, 403, 'refused')
  await refused.body?.cancel()
  t.equal(app.sse.stats().shedPerClient, 1)
  t.equal(events.length, count + 1, 'neither the shed nor the refused request emitted connect or disconnect')
  t.notOk(events.some(e => e[1] === manual.get('shed')), 'the shed stream never appears')

  // shutdown: app.close() ends the rest.
  await app.close()
  t.same(reasonOf(manual.get('holder')), ['shutdown'], 'shutdown')
  await holder.waitEnd().catch(() => {})

  // Every connect is paired with exactly one disconnect, after it.
  const connected = events.filter(e => e[0] === 'connect').map(e => e[1])
  t.equal(new Set(connected).size, connected.length, 'one connect per stream')
  for (const s of connected) {
    const i = events.findIndex(e => e[0] === 'connect' && e[1] === s)
    const ds = events.flatMap((e, k) => e[0] === 'disconnect' && e[1] === s ? [k] : [])
    if (ds.length !== 1 || ds[0] < i) t.fail(`a stream has ${ds.length} disconnects (connect at ${i}, disconnects at ${ds.join(',')})`)
  }
  t.equal(events.filter(e => e[0] === 'disconnect').length, connected.length, `${connected.length} connects, as many disconnects`)
  t.same(events.filter(e => e[0] === 'disconnect').map(e => e[2]), ['client', 'server', 'expired', 'disconnect', 'end', 'slow', 'shutdown'])
})
