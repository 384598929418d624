/**
 * A real Chromium for end-to-end tests, driven by playwright-core (which
 * never downloads a browser: it runs the system's). Where Chromium is not
 * installed the suite is skipped with one line saying how to install it,
 * except under CI=true, where its absence fails.
 */
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import type { T } from './index.js'

export const HOW_TO_INSTALL_CHROMIUM = 'chromium not found; install it with: apt-get install -y chromium'

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync'
]

function executable (path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** The Chromium to run: /usr/bin/chromium, else `chromium` (or `chromium-browser`) on PATH; null if none. */
export function chromiumPath (): string | null {
  if (executable('/usr/bin/chromium')) return '/usr/bin/chromium'
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    for (const name of ['chromium', 'chromium-browser']) {
      const candidate = join(dir, name)
      if (executable(candidate)) return candidate
    }
  }
  return null
}

/**
 * Decides whether a browser suite runs: returns a skip reason, or false.
 * Under CI=true a missing Chromium throws instead.
 */
export function browserSkip (): string | false {
  if (chromiumPath() !== null) return false
  if (process.env.CI === 'true') throw new Error(HOW_TO_INSTALL_CHROMIUM + ' (CI=true: the browser suites must run)')
  return HOW_TO_INSTALL_CHROMIUM
}

/** Launches Chromium for this test (closed at its teardown). `extraArgs` are added to {@link CHROMIUM_ARGS}. */
export async function launchBrowser (t: T, extraArgs: string[] = []): Promise<Browser> {
  const executablePath = chromiumPath()
  if (executablePath === null) throw new Error(HOW_TO_INSTALL_CHROMIUM)
  const browser = await chromium.launch({ executablePath, args: [...CHROMIUM_ARGS, ...extraArgs], timeout: 20_000 })
  t.teardown(() => browser.close())
  return browser
}

/** A page whose console errors and uncaught exceptions are collected (`errors`), for assertions. */
export async function openPage (t: T, browser: Browser, options: Parameters<Browser['newContext']>[0] = {}): Promise<{ page: Page, context: BrowserContext, errors: string[] }> {
  const context = await browser.newContext(options)
  t.teardown(() => context.close())
  const page = await context.newPage()
  page.setDefaultTimeout(20_000)
  const errors: string[] = []
  page.on('pageerror', err => errors.push(`pageerror: ${err.message}`))
  page.on('console', msg => { if (msg.type() === 'error') errors.push(`console: ${msg.text()}`) })
  return { page, context, errors }
}
