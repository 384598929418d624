// The demo app: a page, a live price ticker, a chat room with a form that
// publishes (validated by the channel's schema), and live stats() counts; and
// a second page (/generation) with simulated LLM generations: producer runs
// that a page follows to their end, across reloads and in several tabs.
// `buildDemo(options)` returns the app unstarted; demo/server.mjs listens.
import { readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import ssePlugin from '../dist/esm/index.js'
import { demoChannels } from './channels.mjs'

const here = (path) => new URL(path, import.meta.url)

const FILES = {
  '/': { file: here('public/index.html'), type: 'text/html; charset=utf-8' },
  '/app.js': { file: here('public/app.js'), type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: here('public/style.css'), type: 'text/css; charset=utf-8' },
  '/generation': { file: here('public/generation.html'), type: 'text/html; charset=utf-8' },
  '/generation.js': { file: here('public/generation.js'), type: 'text/javascript; charset=utf-8' },
  // The page imports the built client: no bundler, no dependency.
  '/client.js': { file: here('../dist/esm/client.js'), type: 'text/javascript; charset=utf-8' }
}

export const SYMBOLS = ['ACME', 'GLOBEX', 'INITECH', 'UMBRELLA', 'HOOLI', 'STARK']
const OPENING = [182.4, 64.15, 23.9, 311.0, 1210.5, 97.35]
const ROOM_ID = { type: 'string', pattern: '^[A-Za-z0-9_-]{1,32}$' }
const KEEP_MESSAGES = 50
const GENERATION_ID = { type: 'string', pattern: '^[a-z0-9]{1,32}$' }
const KEEP_GENERATIONS = 100

// The simulated model's vocabulary: words split into "subword" tokens of 1 to 4 characters.
const WORDS = ('Server-Sent Events stream text from the server to the page over one plain HTTP response . ' +
  'Every token gets an id , so a reload continues exactly where it stopped : nothing missing , nothing twice . ' +
  'A second tab follows the same generation from its start , and cancel stops the producer wherever it runs . ' +
  'The hub keeps the whole generation while it runs and for a while after , then forgets it . ' +
  'Naïve café déjà vu — ünïcödé 🙂 tokens travel as they are .').split(' ')

/** A seeded PRNG (mulberry32): the same id always makes the same text. */
function prng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/** `count` tokens of 1 to 4 characters (code points), deterministic for `id`. */
export function simulatedTokens (id, count) {
  let seed = 0
  for (const c of id) seed = Math.imul(seed, 31) + c.codePointAt(0)
  const random = prng(seed)
  const out = []
  while (out.length < count) {
    const word = [...(out.length === 0 ? '' : ' ') + WORDS[Math.floor(random() * WORDS.length)]]
    for (let i = 0; i < word.length && out.length < count;) {
      const n = 1 + Math.floor(random() * 4)
      out.push(word.slice(i, i + n).join(''))
      i += n
    }
  }
  return out
}

/**
 * Builds the demo app (not listening yet).
 * @param {object} [options]
 * @param {string} [options.redisUrl] Redis backend at this URL; memory backend without it.
 * @param {string} [options.redisPrefix] key prefix on Redis (several demos can share one Redis).
 * @param {number} [options.tickMs=250] ticker period in ms (two symbols move per tick); 0 = no ticker.
 * @param {{ key: string | Buffer, cert: string | Buffer }} [options.http2] serve HTTP/2 over TLS (HTTP/1.1 still accepted).
 * @param {object} [options.generation] the simulated generations: `tokens` per generation (300), `delayMs` [min, max] between
 *   steps of 1 to 4 tokens ([20, 50]), `ttl` ms a finished generation stays followable (600000).
 * @param {object} [options.sse] more plugin options (retry, heartbeat, ...).
 * @param {object} [options.fastify] more Fastify options (logger, ...).
 */
export async function buildDemo (options = {}) {
  const { redisUrl, redisPrefix, tickMs = 250, http2, sse = {}, fastify = {} } = options
  const { tokens: tokenCount = 300, delayMs = [20, 50], ttl = 600_000 } = options.generation ?? {}
  const app = Fastify({
    logger: false,
    ...(http2 ? { http2: true, https: { key: http2.key, cert: http2.cert, allowHTTP1: true } } : {}),
    ...fastify
  })

  let backend
  if (redisUrl) {
    const { redisBackend } = await import('../dist/esm/redis.js')
    backend = redisBackend({ url: redisUrl, ...(redisPrefix ? { prefix: redisPrefix } : {}) })
  }
  await app.register(ssePlugin, {
    retry: 1000,
    retryJitter: 500,
    shutdownJitter: 2000,
    ...(backend ? { backend } : {}),
    ...sse
  })

  const { ticker, room, generation } = demoChannels({ ttl })
  app.sse.channel(ticker)
  app.sse.channel(room)
  app.sse.channel(generation)

  // What a page fetches first (and again after a reset): the latest prices,
  // the room's recent messages, and the id of the last event they include,
  // so the page subscribes from exactly there (the client's lastEventId).
  const prices = new Map()
  const halts = new Map()
  const messages = new Map() // roomId -> [{ id, ...message }]
  let lastId
  ticker.subscribe('price', (data, meta) => { prices.set(data.symbol, { id: meta.id, ...data }); lastId = meta.id })
  ticker.subscribe('halt', (data, meta) => { halts.set(data.symbol, { id: meta.id, until: Date.now() + data.for, ...data }); lastId = meta.id })
  room.subscribe('message', (data, meta) => {
    const roomId = meta.topic.slice('rooms/'.length)
    let list = messages.get(roomId)
    if (list === undefined) messages.set(roomId, list = [])
    list.push({ id: meta.id, ...data })
    if (list.length > KEEP_MESSAGES) list.shift()
    lastId = meta.id
  })

  const quote = SYMBOLS.map((symbol, i) => ({ symbol, price: OPENING[i] }))
  /** Moves one symbol's price a little and publishes it; resolves to the event id. */
  async function tick (symbol = SYMBOLS[Math.floor(Math.random() * SYMBOLS.length)]) {
    const q = quote.find(q => q.symbol === symbol)
    const open = OPENING[SYMBOLS.indexOf(symbol)]
    q.price = Math.max(0.01, Math.round(q.price * (1 + (Math.random() - 0.5) * 0.008) * 100) / 100)
    return ticker.publish('price', { symbol, price: q.price, change: Math.round((q.price / open - 1) * 10000) / 100, at: Date.now() })
  }

  let timer = null
  if (tickMs > 0) {
    let n = 0
    timer = setInterval(() => {
      n++
      Promise.all([tick(), tick()]).catch(err => app.log.debug({ err }, 'demo: tick not published'))
      // Now and then a symbol is halted for a few seconds.
      if (n % 97 === 0) {
        const symbol = SYMBOLS[Math.floor(Math.random() * SYMBOLS.length)]
        ticker.publish('halt', { symbol, reason: Math.random() < 0.5 ? 'news' : 'volatility', for: 3000 }).catch(() => {})
      }
    }, tickMs)
  }
  app.addHook('preClose', async () => { if (timer !== null) clearInterval(timer) })

  for (const [url, { file, type }] of Object.entries(FILES)) {
    app.get(url, async (request, reply) => {
      reply.type(type).header('cache-control', 'no-cache')
      return readFile(file)
    })
  }

  app.get('/events', {
    schema: { querystring: { type: 'object', properties: { room: ROOM_ID } } }
  }, (request, reply) => {
    const roomId = request.query.room ?? 'lobby'
    reply.sse({ subscribe: [ticker, room.topic({ roomId })] })
  })

  app.get('/api/state', {
    schema: { querystring: { type: 'object', properties: { room: ROOM_ID } } }
  }, async (request) => {
    const roomId = request.query.room ?? 'lobby'
    const now = Date.now()
    return {
      lastEventId: lastId ?? null,
      prices: Object.fromEntries([...prices.values()].map(p => [p.symbol, p])),
      halts: [...halts.values()].filter(h => h.until > now),
      messages: messages.get(roomId) ?? [],
      backend: app.sse.stats().backend.kind
    }
  })

  app.post('/api/rooms/:roomId/messages', {
    schema: { params: { type: 'object', properties: { roomId: ROOM_ID }, required: ['roomId'] } }
  }, async (request, reply) => {
    const body = request.body ?? {}
    // No route schema on the body: the channel's schema is the one check,
    // and its 400 (FST_ERR_SSEHUB_PAYLOAD_INVALID) goes back to the page.
    const id = await room.topic({ roomId: request.params.roomId }).publish('message', {
      user: typeof body.user === 'string' ? body.user.trim() : body.user,
      text: typeof body.text === 'string' ? body.text.trim() : body.text,
      at: Date.now()
    })
    reply.code(201)
    return { id }
  })

  app.get('/api/stats', async () => app.sse.stats())

  // ---- simulated LLM generations -------------------------------------------
  // A generation is a producer run: it outlives the page that started it,
  // every token is published (validated, with an id) to `generations/:id`,
  // and it always ends with the hub's `end` event (after `done`).
  const generations = new Map() // id -> { id, tokens, run, yielded, aborted }
  app.post('/api/generations', async (request, reply) => {
    const id = Math.random().toString(36).slice(2, 10) + Date.now().toString(36).slice(-4)
    const tokens = simulatedTokens(id, tokenCount)
    const record = { id, tokens, run: null, yielded: 0, aborted: false }
    record.run = app.sse.run(generation.topic({ id }), async function * (signal) {
      signal.addEventListener('abort', () => { record.aborted = true })
      const random = prng(tokens.length)
      let i = 0
      while (i < tokens.length) {
        // A few tokens at a time, every 20 to 50 ms, as a model streams them.
        for (let k = 1 + Math.floor(random() * 4); k > 0 && i < tokens.length; k--) {
          record.yielded++
          yield { event: 'token', data: { text: tokens[i++] } }
        }
        await sleep(delayMs[0] + random() * (delayMs[1] - delayMs[0]), undefined, { signal }).catch(() => {})
        if (signal.aborted) return
      }
      yield { event: 'done', data: { reason: 'stop' } }
    })
    generations.set(id, record)
    if (generations.size > KEEP_GENERATIONS) generations.delete(generations.keys().next().value)
    // Followers that come before the first token find the run running, not a 404.
    await record.run.started
    reply.code(201)
    return { id, tokens: tokens.length }
  })

  const byId = { schema: { params: { type: 'object', properties: { id: GENERATION_ID }, required: ['id'] } } }
  app.get('/api/generations/:id/stream', byId, (request, reply) => {
    reply.sse({ subscribe: [generation.topic({ id: request.params.id })], since: 'start', until: 'done' })
  })
  app.post('/api/generations/:id/cancel', byId, async (request) =>
    ({ cancelled: await app.sse.cancel(generation.topic({ id: request.params.id })) }))

  app.decorate('demo', { ticker, room, generation, generations, tick, prices, messages })
  return app
}
