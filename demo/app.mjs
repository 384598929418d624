// The demo app: a page, a live price ticker, a chat room with a form that
// publishes (validated by the channel's schema), and live stats() counts.
// `buildDemo(options)` returns the app unstarted; demo/server.mjs listens.
import { readFile } from 'node:fs/promises'
import Fastify from 'fastify'
import ssePlugin from '../dist/esm/index.js'
import { demoChannels } from './channels.mjs'

const here = (path) => new URL(path, import.meta.url)

const FILES = {
  '/': { file: here('public/index.html'), type: 'text/html; charset=utf-8' },
  '/app.js': { file: here('public/app.js'), type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: here('public/style.css'), type: 'text/css; charset=utf-8' },
  // The page imports the built client: no bundler, no dependency.
  '/client.js': { file: here('../dist/esm/client.js'), type: 'text/javascript; charset=utf-8' }
}

export const SYMBOLS = ['ACME', 'GLOBEX', 'INITECH', 'UMBRELLA', 'HOOLI', 'STARK']
const OPENING = [182.4, 64.15, 23.9, 311.0, 1210.5, 97.35]
const ROOM_ID = { type: 'string', pattern: '^[A-Za-z0-9_-]{1,32}$' }
const KEEP_MESSAGES = 50

/**
 * Builds the demo app (not listening yet).
 * @param {object} [options]
 * @param {string} [options.redisUrl] Redis backend at this URL; memory backend without it.
 * @param {string} [options.redisPrefix] key prefix on Redis (several demos can share one Redis).
 * @param {number} [options.tickMs=250] ticker period in ms (two symbols move per tick); 0 = no ticker.
 * @param {{ key: string | Buffer, cert: string | Buffer }} [options.http2] serve HTTP/2 over TLS (HTTP/1.1 still accepted).
 * @param {object} [options.sse] more plugin options (retry, heartbeat, ...).
 * @param {object} [options.fastify] more Fastify options (logger, ...).
 */
export async function buildDemo (options = {}) {
  const { redisUrl, redisPrefix, tickMs = 250, http2, sse = {}, fastify = {} } = options
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

  const { ticker, room } = demoChannels()
  app.sse.channel(ticker)
  app.sse.channel(room)

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

  app.decorate('demo', { ticker, room, tick, prices, messages })
  return app
}
