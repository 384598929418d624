// What one publish costs before fan-out, per payload size: the plugin's path
// (JSON.stringify once, then the compiled TypeBox check of what is sent: the
// object itself when it is plain JSON, else JSON.parse of the string), against
// alternatives: JSON.stringify alone, a schema-compiled stringifier
// (fast-json-stringify, which drops properties the schema does not name),
// and the parts (check, parse, framing).
// Run: node benchmark/serialize.mjs  (after npm run build)
import { Type } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import fastJson from 'fast-json-stringify'
import { defineChannel } from '../dist/esm/index.js'

const Item = Type.Object({ symbol: Type.String(), price: Type.Number(), ts: Type.Number(), tags: Type.Array(Type.String()) })
const schemas = {
  small: Item,
  medium: Type.Object({ items: Type.Array(Item) }),
  large: Type.Object({ items: Type.Array(Item) })
}
const item = (i) => ({ symbol: 'SYM' + i, price: 100 + i / 7, ts: 1790000000000 + i, tags: ['a', 'b'] })
const payloads = {
  small: item(1), // ~80 bytes
  medium: { items: Array.from({ length: 12 }, (_, i) => item(i)) }, // ~1 KB
  large: { items: Array.from({ length: 1200 }, (_, i) => item(i)) } // ~100 KB
}

function bench (fn, minMs = 300) {
  for (let i = 0; i < 200; i++) fn() // warm up
  let n = 0
  const start = process.hrtime.bigint()
  let elapsed = 0n
  while (elapsed < BigInt(minMs) * 1_000_000n) {
    for (let i = 0; i < 50; i++) fn()
    n += 50
    elapsed = process.hrtime.bigint() - start
  }
  return Number(elapsed) / n // ns per call
}

const rows = []
for (const size of Object.keys(payloads)) {
  const data = payloads[size]
  const schema = schemas[size]
  const check = TypeCompiler.Compile(schema)
  const fjs = fastJson(schema)
  const ch = defineChannel('bench', { events: { e: schema } })
  const json = JSON.stringify(data)
  const r = {
    size,
    bytes: json.length,
    stringify: bench(() => JSON.stringify(data)),
    fastJsonStringify: bench(() => fjs(data)),
    checkObject: bench(() => check.Check(data)),
    parse: bench(() => JSON.parse(json)),
    pluginSerialize: bench(() => ch.serialize('e', data)),
    frame: bench(() => Buffer.from('event: e\nid: abcdefgh-123456\ndata: ' + json + '\n\n'))
  }
  rows.push(r)
}
const f = (ns) => ns < 1000 ? `${ns.toFixed(0)} ns` : ns < 1e6 ? `${(ns / 1000).toFixed(1)} µs` : `${(ns / 1e6).toFixed(2)} ms`
console.log(`Node ${process.version}, ${(await import('node:os')).cpus()[0].model}`)
console.log('| payload | JSON bytes | JSON.stringify | fast-json-stringify | check object | JSON.parse | plugin serialize() (stringify + check) | frame (Buffer) |')
console.log('|---|---:|---:|---:|---:|---:|---:|---:|')
for (const r of rows) console.log(`| ${r.size} | ${r.bytes} | ${f(r.stringify)} | ${f(r.fastJsonStringify)} | ${f(r.checkObject)} | ${f(r.parse)} | ${f(r.pluginSerialize)} | ${f(r.frame)} |`)
