// The built client entry is what a browser bundle gets: it must load
// nothing at run time (no fastify, no typebox, no ./channel.js), resolve as
// `fastify-sse-hub/client` for import and require with its types, and run
// with nothing but an EventSource.
import t from 'tap'
import { readFileSync, existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { posix } from 'node:path'
import { ensureDist } from './helpers/demo.js'

ensureDist()
const root = new URL('../', import.meta.url)
const read = (path: string): string => readFileSync(new URL(path, root), 'utf8')

/** Every module specifier a JS file loads: static and dynamic imports, re-exports, require(). */
function specifiers (js: string): string[] {
  const found: string[] = []
  const patterns = [
    /^\s*import\s+(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm,
    /^\s*export\s+[^'";]*?\s+from\s+['"]([^'"]+)['"]/gm,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g
  ]
  for (const re of patterns) for (const m of js.matchAll(re)) found.push(m[1])
  return found
}

t.test('the specifier scan finds what it must (so an empty result means something)', async t => {
  t.same(specifiers(read('dist/esm/index.js')).filter(s => s === 'fastify-plugin' || s === './channel.js').sort(), ['./channel.js', 'fastify-plugin'])
  t.ok(specifiers(read('dist/cjs/channel.js')).includes('./typebox.js'))
  t.same(specifiers('const x = await import("fastify")\nimport type_ from "y"'), ['y', 'fastify'])
})

t.test('dist/esm/client.js and dist/cjs/client.js load nothing at run time', async t => {
  for (const file of ['dist/esm/client.js', 'dist/cjs/client.js']) {
    const js = read(file)
    t.same(specifiers(js), [], `${file}: no import or require at all`)
    const code = js.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '')
    t.notMatch(code, /fastify(?!-sse-hub\/client: )|typebox|channel\.js/i, `${file}: no fastify, typebox or ./channel.js in its code (its error messages name fastify-sse-hub/client)`)
  }
  const dts = read('dist/esm/client.d.ts')
  t.same(specifiers(dts), ['./types.js'], 'its types refer to the schema types only (for Static), never to Fastify')
  t.match(dts, /import type \{ Schema as TSchema, Static \} from '\.\/types\.js'/, 'and only as a type import')
  const types = read('dist/esm/types.d.ts')
  t.same(specifiers(types), ['typebox'], 'which refer to TypeBox 1.x only (for its Static)')
  t.match(types, /import type \{ Static as StaticV1 \} from 'typebox'/, 'and only as a type import')
})

t.test('package.json "exports" has ./client, shaped like ./redis', async t => {
  const pkg = JSON.parse(read('package.json'))
  t.same(pkg.exports['./client'], {
    import: { types: './dist/esm/client.d.ts', default: './dist/esm/client.js' },
    require: { types: './dist/cjs/client.d.ts', default: './dist/cjs/client.js' }
  })
  for (const target of [...Object.values(pkg.exports['./client'].import), ...Object.values(pkg.exports['./client'].require)]) {
    t.ok(existsSync(new URL(target as string, root)), `${target as string} is built`)
  }
  const esm = await import('fastify-sse-hub/client')
  t.same(Object.keys(esm).sort(), ['FollowError', 'follow', 'subscribe'], 'import: subscribe, follow and FollowError')
  const cjs = createRequire(import.meta.url)('fastify-sse-hub/client')
  t.equal(typeof cjs.subscribe, 'function', 'require works too')
  t.equal(typeof cjs.follow, 'function')
})

t.test('it runs in a bare context with only an EventSource: no Node or DOM globals needed beyond it', async t => {
  const vm = await import('node:vm')
  const source = read('dist/esm/client.js').replace(/^export \{[^}]*\};?\s*$/m, '').replace(/^export /gm, '')
  const calls: string[] = []
  class FakeEventSource {
    readyState = 0
    listeners = new Map<string, Array<(e: unknown) => void>>()
    constructor (readonly url: string) { calls.push(`new ${url}`); (context as { lastSource?: unknown }).lastSource = this }
    addEventListener (type: string, fn: (e: unknown) => void): void { this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]) }
    removeEventListener (type: string, fn: (e: unknown) => void): void { this.listeners.set(type, (this.listeners.get(type) ?? []).filter(f => f !== fn)) }
    close (): void { this.readyState = 2; calls.push('close') }
    emit (type: string, e: unknown): void { for (const fn of this.listeners.get(type) ?? []) fn(e) }
  }
  const context = vm.createContext({ EventSource: FakeEventSource, calls, JSON, String, Object, Error, TypeError, encodeURIComponent, setTimeout })
  vm.runInContext(source + `
    const got = []
    const sub = subscribe('/s?room=a#top', { price: (d, m) => got.push([d.p, m.id, m.event]) }, { lastEventId: '1-2' })
    sub.source.emit('open', {})
    sub.source.emit('price', { data: '{"p":3}', lastEventId: '1-3' })
    const state = sub.state
    sub.close()
    sub.source.emit('price', { data: '{"p":4}', lastEventId: '1-4' })
    globalThis.result = { got, url: sub.url, state, after: sub.state, last: sub.lastEventId }
  `, context)
  t.same(JSON.parse(JSON.stringify(context.result)), {
    got: [[3, '1-3', 'price']],
    url: '/s?room=a&lastEventId=1-2#top',
    state: 'open',
    after: 'closed',
    last: '1-3'
  })
  t.same(calls, ['new /s?room=a&lastEventId=1-2#top', 'close'])

  // follow(): the stored id resumes, the terminal event resolves, closes and clears; no fetch is needed on that path.
  calls.length = 0
  vm.runInContext(`
    const store = new Map([['k', '1-5']])
    const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) }
    const texts = []
    const f = follow('/g', { token: (d) => texts.push(d.text) }, { until: 'done', storageKey: 'k', storage, fetch: () => { throw new Error('no probe') } })
    const es = globalThis.lastSource
    es.emit('token', { data: '{"text":"a"}', lastEventId: '1-6' })
    const mid = store.get('k')
    es.emit('done', { data: '{"reason":"stop"}', lastEventId: '1-7' })
    f.finished.then(end => { globalThis.followed = { end, texts, mid, stored: store.get('k') ?? null, state: f.state, from: f.resumedFrom } })
  `, context)
  await new Promise(resolve => setImmediate(resolve))
  t.same(JSON.parse(JSON.stringify(context.followed)), {
    end: { event: 'done', data: { reason: 'stop' }, id: '1-7' },
    texts: ['a'],
    mid: '1-6',
    stored: null,
    state: 'closed',
    from: '1-5'
  })
  t.same(calls, ['new /g?lastEventId=1-5', 'close'])
})

t.test('the main entry never loads ioredis (an optional peer: only fastify-sse-hub/redis needs it)', async t => {
  for (const dir of ['dist/esm/', 'dist/cjs/']) {
    // Every file the entry reaches through relative imports, transitively.
    const seen = new Set<string>()
    const external = new Set<string>()
    const visit = (file: string): void => {
      if (seen.has(file)) return
      seen.add(file)
      for (const spec of specifiers(read(dir + file))) {
        if (spec.startsWith('.')) visit(posix.normalize(posix.join(posix.dirname(file), spec)))
        else external.add(spec)
      }
    }
    visit('index.js')
    t.ok(seen.size >= 8, `${dir}: the scan followed the entry's own files (${seen.size})`)
    t.notOk([...seen].some(f => f === 'redis.js' || f.startsWith('backends/redis')), `${dir}: the Redis backend is not reached`)
    t.notOk([...external].some(s => s === 'ioredis' || s.startsWith('ioredis/')), `${dir}: no ioredis among ${[...external].sort().join(', ')}`)
  }
  // And the Redis entry does load it (so the scan can see it).
  t.ok(specifiers(read('dist/esm/backends/redis-connection.js')).includes('ioredis'))
})
