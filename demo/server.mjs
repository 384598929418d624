// `npm run demo`: builds dist/ if it is missing, then serves the demo on
// http://localhost:$PORT (3000 by default). REDIS_URL switches to the Redis
// backend (run two with different PORTs: one hub).
import { existsSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
if (!existsSync(new URL('../dist/esm/client.js', import.meta.url)) || !existsSync(new URL('../dist/esm/index.js', import.meta.url))) {
  console.log('demo: building dist/ first')
  execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit' })
}
const { buildDemo } = await import('./app.mjs')

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? 'localhost'
const redisUrl = process.env.REDIS_URL || undefined
const app = await buildDemo({ redisUrl, fastify: { logger: { level: process.env.LOG_LEVEL ?? 'warn' } } })
await app.listen({ port, host })
console.log(`fastify-sse-hub demo on http://localhost:${port}/ (backend: ${redisUrl ? 'redis at ' + redisUrl : 'memory'}; Ctrl-C stops it)`)

let closing = false
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (closing) process.exit(1)
    closing = true
    app.close().then(() => process.exit(0), () => process.exit(1))
  })
}
