// Makes docs/demo.png: the demo in the system's Chromium (playwright-core
// never downloads a browser). `node demo/screenshot.mjs [out.png]`
import { existsSync, mkdirSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const root = fileURLToPath(new URL('..', import.meta.url))
if (!existsSync(new URL('../dist/esm/client.js', import.meta.url))) {
  execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit' })
}
const { buildDemo } = await import('./app.mjs')

const out = process.argv[2] ?? `${root}docs/demo.png`
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium'
const app = await buildDemo({ tickMs: 150 })
await app.listen({ port: 0, host: '127.0.0.1' })
const origin = `http://127.0.0.1:${app.server.address().port}`
const lobby = app.demo.room.topic({ roomId: 'lobby' })
const say = (user, text) => lobby.publish('message', { user, text, at: Date.now() })

const browser = await chromium.launch({
  executablePath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync']
})
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 })
  await page.goto(origin + '/')
  await page.waitForFunction(() => document.querySelectorAll('#prices tr').length === 6)
  await say('ada', 'Prices look lively this morning.')
  await say('grace', 'Every event has an id: reconnect and you get exactly what you missed.')
  await say('linus', 'And the payloads are typed from the same TypeBox schemas on both sides.')
  await page.waitForFunction(() => document.querySelectorAll('#messages li:not(.empty)').length === 3)
  // Show the validation path too: an empty message is refused by the channel schema.
  await page.fill('#user', 'you')
  await page.click('#send button')
  await page.waitForFunction(() => !document.querySelector('#form-error').hidden)
  await page.fill('#text', 'Hello from the form!')
  // Let stats poll, and a few more ticks land.
  await page.waitForFunction(() => Number(document.querySelector('[data-stat="published"]').textContent) > 40 &&
    document.querySelector('[data-stat="openStreams"]').textContent === '1' && Number(document.querySelector('[data-stat="deliveries"]').textContent) > 20, null, { timeout: 15_000 })
  mkdirSync(dirname(out), { recursive: true })
  await page.screenshot({ path: out, fullPage: true })
  console.log(`wrote ${out}`)
} finally {
  await browser.close()
  await app.close()
}
