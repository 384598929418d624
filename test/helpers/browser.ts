/**
 * Real browsers for end-to-end tests, three engines behind one interface:
 *
 * - Chromium, driven by playwright-core over CDP;
 * - Firefox (Debian's firefox-esr), driven by puppeteer-core over WebDriver BiDi;
 * - WebKit (WebKitGTK's MiniBrowser), driven by selenium-webdriver through
 *   WebKitWebDriver, on an Xvfb display started here (MiniBrowser has no
 *   headless mode).
 *
 * None of the drivers downloads a browser: they run the system's. Where an
 * engine is not installed its suite is skipped with one line saying how to
 * install it, except under CI=true, where its absence fails.
 *
 * A test file launches each engine once ({@link launchEngine}) and opens its
 * pages from it; everything is closed at the test's teardown.
 */
import { accessSync, constants } from 'node:fs'
import type { ChildProcess } from 'node:child_process'
import { createRequire } from 'node:module'
import { delimiter, join } from 'node:path'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import type { T } from './index.js'
import { freePort } from './redis.js'
import { spawnGuarded, type Guarded } from './guard.js'

export type EngineName = 'chromium' | 'firefox' | 'webkit'
const ALL_ENGINES: readonly EngineName[] = ['chromium', 'firefox', 'webkit']
/**
 * The engines the suites run, in order: all three, or those named in
 * TEST_ENGINES (comma-separated, e.g. `TEST_ENGINES=firefox npx tap test/browser-demo.test.ts`).
 */
export const ENGINES: readonly EngineName[] = (() => {
  const only = (process.env.TEST_ENGINES ?? '').split(',').map(s => s.trim()).filter(s => s !== '')
  if (only.length === 0) return ALL_ENGINES
  const unknown = only.filter(s => !(ALL_ENGINES as readonly string[]).includes(s))
  if (unknown.length > 0) throw new Error(`TEST_ENGINES: unknown engine ${unknown.join(', ')} (known: ${ALL_ENGINES.join(', ')})`)
  return ALL_ENGINES.filter(e => only.includes(e))
})()

export const HOW_TO_INSTALL: Record<EngineName, string> = {
  chromium: 'chromium not found; install it with: apt-get install -y chromium',
  firefox: 'firefox-esr not found; install it with: apt-get install -y firefox-esr',
  webkit: 'WebKitWebDriver, MiniBrowser or Xvfb not found; install them with: apt-get install -y webkit2gtk-driver xvfb'
}
/** @deprecated kept for suites written before the other engines: use HOW_TO_INSTALL.chromium. */
export const HOW_TO_INSTALL_CHROMIUM = HOW_TO_INSTALL.chromium

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-sync'
]

const MINIBROWSER_DIRS = ['/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1', '/usr/lib/aarch64-linux-gnu/webkit2gtk-4.1', '/usr/libexec/webkit2gtk-4.1']

function executable (path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** `/usr/bin/<names[0]>`, else the first of `names` on PATH; null if none. */
function findBinary (...names: string[]): string | null {
  for (const name of names) if (executable(`/usr/bin/${name}`)) return `/usr/bin/${name}`
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue
    for (const name of names) {
      const candidate = join(dir, name)
      if (executable(candidate)) return candidate
    }
  }
  return null
}

/** The Chromium to run: /usr/bin/chromium, else `chromium` (or `chromium-browser`) on PATH; null if none. */
export function chromiumPath (): string | null {
  return findBinary('chromium', 'chromium-browser')
}

function firefoxPath (): string | null {
  return findBinary('firefox-esr', 'firefox')
}

function webkitPaths (): { driver: string, miniBrowser: string, xvfb: string | null } | null {
  const driver = findBinary('WebKitWebDriver')
  const miniBrowser = MINIBROWSER_DIRS.map(dir => join(dir, 'MiniBrowser')).find(executable)
  const xvfb = findBinary('Xvfb')
  if (driver === null || miniBrowser === undefined) return null
  // A display is needed: the one we run in, or an Xvfb of our own.
  if (xvfb === null && (process.env.DISPLAY ?? '') === '') return null
  return { driver, miniBrowser, xvfb }
}

function installed (name: EngineName): boolean {
  if (name === 'chromium') return chromiumPath() !== null
  if (name === 'firefox') return firefoxPath() !== null
  return webkitPaths() !== null
}

/**
 * Decides whether a suite on `name` runs: returns a skip reason, or false.
 * Under CI=true a missing engine throws instead.
 */
export function engineSkip (name: EngineName): string | false {
  if (installed(name)) return false
  if (process.env.CI === 'true') throw new Error(HOW_TO_INSTALL[name] + ' (CI=true: the browser suites must run)')
  return HOW_TO_INSTALL[name]
}

/** Chromium's skip reason (see {@link engineSkip}). */
export function browserSkip (): string | false {
  return engineSkip('chromium')
}

export interface EngineOptions {
  /** Accept self-signed certificates (for HTTP/2 over TLS against a certificate made by the test). */
  insecureTLS?: boolean
}

/** One tab (a window in WebKit) of an engine. */
export interface EnginePage {
  readonly engine: EngineName
  /**
   * Console errors and uncaught page errors, where the engine reports them
   * (see {@link Engine.reportsConsole}); always empty otherwise.
   */
  readonly errors: string[]
  /** Navigates and waits for the load event. */
  goto: (url: string) => Promise<void>
  /** Runs `fn(arg)` in the page (serialised: it sees no closure) and resolves to its (awaited, JSON-able) result. */
  evaluate: <R, A = undefined>(fn: (arg: A) => R | Promise<R>, arg?: A) => Promise<R>
  /**
   * Waits until `fn(arg)` is truthy in the page (checked every 10 ms there,
   * so the wait ends as soon as it holds); rejects after `ms` saying what it waited for.
   */
  waitFor: <A = undefined>(fn: (arg: A) => unknown, arg?: A, ms?: number) => Promise<void>
  /** `textContent` of the first element matching `selector`; null if none. */
  text: (selector: string) => Promise<string | null>
  /** How many elements match `selector`. */
  count: (selector: string) => Promise<number>
  /** Sets an input's value (and fires `input`). */
  fill: (selector: string, value: string) => Promise<void>
  /** Clicks the element (`element.click()`). */
  click: (selector: string) => Promise<void>
  close: () => Promise<void>
}

export interface Engine {
  readonly name: EngineName
  /** The browser's own version string, for the test's log. */
  readonly version: string
  /** Whether pages collect console errors into `errors` (WebDriver classic cannot see the console: WebKit does not). */
  readonly reportsConsole: boolean
  /** Opens a page in a fresh context (its own cookies and connection pool) where the engine allows it. */
  newPage: () => Promise<EnginePage>
  close: () => Promise<void>
}

const DEFAULT_WAIT_MS = 20_000

/** The in-page side of waitFor: polls `src(arg)` every 10 ms until truthy or `ms` passed. */
async function pollInPage ({ src, arg, ms }: { src: string, arg: unknown, ms: number }): Promise<boolean> {
  // Indirect eval: the predicate is serialised source, run in the page's global scope.
  const check = (0, eval)('(' + src + ')') as (arg: unknown) => unknown // eslint-disable-line no-eval
  const deadline = Date.now() + ms
  for (;;) {
    if (await check(arg)) return true
    if (Date.now() > deadline) return false
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

/** The engine-independent part of a page: everything is built on `evaluate`. */
function pageFrom (engine: EngineName, errors: string[], goto: (url: string) => Promise<void>,
  evaluate: <R, A>(fn: (arg: A) => R | Promise<R>, arg?: A) => Promise<R>, close: () => Promise<void>): EnginePage {
  return {
    engine,
    errors,
    goto,
    evaluate,
    close,
    async waitFor (fn, arg, ms = DEFAULT_WAIT_MS) {
      const src = fn.toString()
      const ok = await evaluate(pollInPage, { src, arg, ms })
      if (!ok) throw new Error(`${engine}: timed out after ${ms} ms waiting for ${src}${arg === undefined ? '' : ` (arg ${JSON.stringify(arg)})`}`)
    },
    text: selector => evaluate(s => document.querySelector(s)?.textContent ?? null, selector),
    count: selector => evaluate(s => document.querySelectorAll(s).length, selector),
    fill: (selector, value) => evaluate(([s, v]) => {
      const input = document.querySelector(s) as HTMLInputElement
      input.value = v
      input.dispatchEvent(new Event('input', { bubbles: true }))
    }, [selector, value] as const),
    click: selector => evaluate(s => { (document.querySelector(s) as HTMLElement).click() }, selector)
  }
}

async function launchChromium (options: EngineOptions): Promise<Engine> {
  const executablePath = chromiumPath()
  if (executablePath === null) throw new Error(HOW_TO_INSTALL.chromium)
  const args = [...CHROMIUM_ARGS, ...(options.insecureTLS === true ? ['--ignore-certificate-errors'] : [])]
  const browser = await chromium.launch({ executablePath, args, timeout: 60_000 })
  return {
    name: 'chromium',
    version: browser.version(),
    reportsConsole: true,
    async newPage () {
      const context = await browser.newContext({ ignoreHTTPSErrors: options.insecureTLS === true })
      const page = await context.newPage()
      page.setDefaultTimeout(DEFAULT_WAIT_MS)
      const errors: string[] = []
      page.on('pageerror', err => errors.push(`pageerror: ${err.message}`))
      page.on('console', msg => { if (msg.type() === 'error') errors.push(`console: ${msg.text()}`) })
      return pageFrom('chromium', errors,
        async url => { await page.goto(url) },
        (fn, arg) => page.evaluate(fn as never, arg) as never,
        () => context.close())
    },
    close: () => browser.close()
  }
}

async function launchFirefox (options: EngineOptions): Promise<Engine> {
  const executablePath = firefoxPath()
  if (executablePath === null) throw new Error(HOW_TO_INSTALL.firefox)
  // Its CommonJS build: the ESM one loads chromium-bidi by a path that tap's
  // TypeScript loader resolves wrongly (BidiMapper.js.js).
  const puppeteer = createRequire(import.meta.url)('puppeteer-core') as typeof import('puppeteer-core')
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath,
    headless: true,
    acceptInsecureCerts: options.insecureTLS === true,
    timeout: 60_000
  })
  return {
    name: 'firefox',
    version: await browser.version(),
    reportsConsole: true,
    async newPage () {
      const context = await browser.createBrowserContext()
      const page = await context.newPage()
      page.setDefaultTimeout(DEFAULT_WAIT_MS)
      const errors: string[] = []
      page.on('pageerror', err => errors.push(`pageerror: ${err instanceof Error ? err.message : String(err)}`))
      page.on('console', msg => { if (msg.type() === 'error') errors.push(`console: ${msg.text()}`) })
      return pageFrom('firefox', errors,
        async url => { await page.goto(url, { waitUntil: 'load' }) },
        (fn, arg) => page.evaluate(fn as never, arg) as never,
        () => context.close())
    },
    close: () => browser.close()
  }
}

/** Starts Xvfb on a free display (it tells us which on fd 3); resolves to `:N`. */
async function startXvfb (xvfb: string, children: Guarded[]): Promise<string> {
  const guarded = spawnGuarded(xvfb, ['-displayfd', '3', '-screen', '0', '1280x800x24', '-nolisten', 'tcp'], {
    stdio: ['pipe', 'ignore', 'pipe', 'pipe']
  })
  children.push(guarded)
  const child = guarded.child
  let stderr = ''
  child.stderr?.on('data', chunk => { stderr += String(chunk) })
  const out = child.stdio[3] as NodeJS.ReadableStream
  return new Promise((resolve, reject) => {
    let text = ''
    const timer = setTimeout(() => reject(new Error(`Xvfb did not start within 30 s: ${stderr}`)), 30_000)
    out.on('data', chunk => {
      text += String(chunk)
      if (text.includes('\n')) {
        clearTimeout(timer)
        resolve(':' + text.trim())
      }
    })
    child.once('exit', code => { clearTimeout(timer); reject(new Error(`Xvfb exited (${String(code)}): ${stderr}`)) })
  })
}

/** Waits for a freshly spawned WebKitWebDriver to answer /status (bounded). */
async function driverReady (url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`WebKitWebDriver exited with ${child.exitCode}`)
    try {
      const res = await fetch(url + '/status')
      if (res.ok) return
    } catch {}
    if (Date.now() > deadline) throw new Error('WebKitWebDriver did not answer /status within 30 s')
    // A process starting up, not the behaviour under test: poll its port.
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

async function launchWebKit (options: EngineOptions): Promise<Engine> {
  const paths = webkitPaths()
  if (paths === null) throw new Error(HOW_TO_INSTALL.webkit)
  // Guarded: should the test process die without its teardown, they die too.
  const children: Guarded[] = []
  const stopAll = async (): Promise<void> => { for (const child of children.reverse()) await child.stop() }
  try {
    const display = paths.xvfb !== null ? await startXvfb(paths.xvfb, children) : process.env.DISPLAY as string
    const port = await freePort()
    const driverProcess = spawnGuarded(paths.driver, [`--port=${port}`, '--host=127.0.0.1'], {
      env: { ...process.env, DISPLAY: display }
    })
    children.push(driverProcess)
    const server = `http://127.0.0.1:${port}`
    await driverReady(server, driverProcess.child)
    const { default: webdriver } = await import('selenium-webdriver')
    const driver = await new webdriver.Builder().usingServer(server).withCapabilities({
      browserName: 'MiniBrowser',
      acceptInsecureCerts: options.insecureTLS === true,
      'webkitgtk:browserOptions': { binary: paths.miniBrowser, args: ['--automation'] }
    }).build()
    await driver.manage().setTimeouts({ script: 60_000, pageLoad: 30_000 })
    const caps = await driver.getCapabilities()
    const version = `MiniBrowser (WebKitGTK) ${String(caps.get('browserVersion'))}`

    // One WebDriver session drives every page: each page is a window, and
    // each command first switches to its window. Commands are serialised.
    let current = await driver.getWindowHandle()
    // A window no page uses (the session's first, or the last one left): the next page takes it.
    let spare: string | null = current
    let queue: Promise<unknown> = Promise.resolve()
    const serial = <R>(handle: string, fn: () => Promise<R>): Promise<R> => {
      const run = queue.then(async () => {
        if (current !== handle) {
          await driver.switchTo().window(handle)
          current = handle
        }
        return fn()
      })
      queue = run.catch(() => {})
      return run
    }

    return {
      name: 'webkit',
      version,
      reportsConsole: false,
      async newPage () {
        let handle: string
        if (spare !== null) {
          handle = spare
          spare = null
        } else {
          handle = await serial(current, async () => {
            await driver.switchTo().newWindow('window')
            current = await driver.getWindowHandle()
            return current
          })
        }
        const evaluate = <R, A>(fn: (arg: A) => R | Promise<R>, arg?: A): Promise<R> => serial(handle, async () => {
          const done = await driver.executeAsyncScript(
            'const done = arguments[arguments.length - 1];' +
            `Promise.resolve().then(() => (${fn.toString()})(arguments[0]))` +
            '.then(value => done({ value: value === undefined ? null : value }), err => done({ error: String(err) + (err && err.stack ? " at " + err.stack : "") }))',
            arg ?? null) as { value?: R, error?: string }
          if (done.error !== undefined) throw new Error(`webkit: page script failed: ${done.error}`)
          return done.value as R
        })
        return pageFrom('webkit', [],
          async url => {
            await serial(handle, () => driver.get(url))
            // WebKitWebDriver returns once the document is interactive, before module scripts ran: wait for load.
            const loaded = await evaluate(pollInPage, { src: '() => document.readyState === "complete"', arg: null, ms: 30_000 })
            if (!loaded) throw new Error(`webkit: ${url} did not load within 30 s`)
          },
          evaluate,
          () => serial(handle, async () => {
            // The session's last window stays: closing it would end the session.
            if ((await driver.getAllWindowHandles()).length > 1) {
              await driver.close()
              current = (await driver.getAllWindowHandles())[0]
              await driver.switchTo().window(current)
            } else {
              await driver.get('about:blank')
              spare = handle
            }
          }))
      },
      async close () {
        try {
          await queue
          await driver.quit()
        } finally {
          await stopAll()
        }
      }
    }
  } catch (err) {
    await stopAll()
    throw err
  }
}

async function launch (name: EngineName, options: EngineOptions): Promise<Engine> {
  const engine = name === 'chromium'
    ? await launchChromium(options)
    : name === 'firefox' ? await launchFirefox(options) : await launchWebKit(options)
  let closing: Promise<void> | null = null
  return { ...engine, close: () => (closing ??= engine.close()) }
}

/** Launches `name` for this test; closed at its teardown. */
export async function launchEngine (t: T, name: EngineName, options: EngineOptions = {}): Promise<Engine> {
  const engine = await launch(name, options)
  t.teardown(() => engine.close())
  return engine
}

/**
 * Starts launching every installed engine of `names` at once, so that the
 * slow starts (Firefox takes seconds, mostly waiting) overlap the first
 * engine's tests; `get(t, name)` waits for one and closes it at `t`'s
 * teardown. Whatever is still open is closed at `root`'s teardown.
 */
export function startEngines (root: T, options: EngineOptions = {}, names: readonly EngineName[] = ENGINES): { get: (t: T, name: EngineName) => Promise<Engine> } {
  const started = new Map<EngineName, { at: number, engine: Promise<Engine> }>()
  for (const name of names) {
    if (!installed(name)) continue
    const engine = launch(name, options)
    engine.catch(() => {}) // reported by get()
    started.set(name, { at: Date.now(), engine })
  }
  root.teardown(async () => {
    for (const { engine } of started.values()) await engine.then(e => e.close(), () => {})
  })
  return {
    async get (t, name) {
      const entry = started.get(name)
      if (entry === undefined) throw new Error(HOW_TO_INSTALL[name])
      const waitFrom = Date.now()
      const engine = await entry.engine
      t.teardown(() => engine.close())
      ;(t as { comment?: (m: string) => void }).comment?.(`${engine.version}: launch took ${Date.now() - entry.at} ms, ${Date.now() - waitFrom} ms of it waited for here`)
      return engine
    }
  }
}

/** Opens a page of `engine`, closed at this test's teardown. */
export async function openEnginePage (t: T, engine: Engine): Promise<EnginePage> {
  const page = await engine.newPage()
  t.teardown(() => page.close())
  return page
}

/**
 * Console noise each engine makes while a server is down or answers an
 * error on purpose: failed connections are logged, nothing else may be.
 */
export const CONNECTION_NOISE = /net::ERR|status of [45]\d\d|can.t establish a connection|connection .* was interrupted|NetworkError|Failed to load resource/

/** @deprecated Chromium only, for suites written before the other engines: use {@link launchEngine}. */
export async function launchBrowser (t: T, extraArgs: string[] = []): Promise<Browser> {
  const executablePath = chromiumPath()
  if (executablePath === null) throw new Error(HOW_TO_INSTALL.chromium)
  const browser = await chromium.launch({ executablePath, args: [...CHROMIUM_ARGS, ...extraArgs], timeout: 20_000 })
  t.teardown(() => browser.close())
  return browser
}

/** @deprecated Chromium only (see {@link launchBrowser}): a page whose console errors are collected. */
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
