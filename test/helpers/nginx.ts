/**
 * A real nginx for proxy tests: started by the test on free ports with its
 * own prefix (config, logs, pid, temp dirs) in a temp dir, one process
 * (`master_process off`), killed at teardown. The site config is the README's
 * nginx block with its ports, upstream and certificate paths replaced, so
 * the test proves what the README says. Where nginx is not installed the
 * suite is skipped with one line saying how to install it, except under
 * CI=true, where its absence fails.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { T } from './index.js'
import { freePort } from './redis.js'
import { spawnGuarded } from './guard.js'

export const HOW_TO_INSTALL_NGINX = 'nginx not found; install it with: apt-get install -y nginx'

function nginxBinary (): string | null {
  for (const candidate of ['/usr/sbin/nginx', 'nginx']) {
    if (spawnSync(candidate, ['-v']).status === 0) return candidate
  }
  return null
}

export function nginxSkip (): string | false {
  if (nginxBinary() !== null) return false
  if (process.env.CI === 'true') throw new Error(HOW_TO_INSTALL_NGINX + ' (CI=true: the nginx suite must run)')
  return HOW_TO_INSTALL_NGINX
}

/** nginx's version, e.g. `1.22.1`. */
export function nginxVersion (): string {
  const out = spawnSync(nginxBinary() ?? 'nginx', ['-v'], { encoding: 'utf8' })
  return /nginx\/(\S+)/.exec(out.stderr + out.stdout)?.[1] ?? 'unknown'
}

/** The first ```nginx block of README.md's "Behind nginx" section. */
export function readmeNginxConfig (): string {
  const readme = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8')
  const section = readme.slice(readme.indexOf('\n## Behind nginx'))
  const match = /```nginx\n([\s\S]*?)```/.exec(section)
  if (readme.indexOf('\n## Behind nginx') === -1 || match === null) throw new Error('README.md has no ```nginx block under "## Behind nginx"')
  return match[1]
}

/** Replaces `from` (which must occur exactly once) with `to`: a README edit that breaks the match fails loudly. */
function replaceOnce (text: string, from: string | RegExp, to: string): string {
  const count = typeof from === 'string' ? text.split(from).length - 1 : (text.match(new RegExp(from.source, 'g')) ?? []).length
  if (count !== 1) throw new Error(`nginx config: expected one ${String(from)}, found ${count}`)
  return text.replace(from, to)
}

export interface Nginx {
  /** http://127.0.0.1:port (HTTP/1.1). */
  http: string
  /** https://127.0.0.1:port (HTTP/2 over TLS, and HTTP/1.1). */
  https: string
  /** The site config nginx runs. */
  site: string
  /** nginx's error log so far. */
  errorLog: () => string
  stop: () => Promise<void>
}

/**
 * Starts nginx with `site` (the README block) pointed at the app on
 * `appPort`, listening on two free ports, with `tls` as its certificate.
 * `edit` may change the site text first (e.g. remove a line, for a control).
 */
export async function startNginx (t: T, { site, appPort, tls, edit }: {
  site: string
  appPort: number
  tls: { key: string | Buffer, cert: string | Buffer }
  edit?: (site: string) => string
}): Promise<Nginx> {
  const binary = nginxBinary()
  if (binary === null) throw new Error(HOW_TO_INSTALL_NGINX)
  const dir = mkdtempSync(join(tmpdir(), 'sse-hub-nginx-'))
  for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub))
  writeFileSync(join(dir, 'cert.pem'), tls.cert)
  writeFileSync(join(dir, 'key.pem'), tls.key, { mode: 0o600 })
  const [httpPort, httpsPort] = [await freePort(), await freePort()]
  let text = site
  text = replaceOnce(text, /server 127\.0\.0\.1:3000\b/, `server 127.0.0.1:${appPort}`)
  text = replaceOnce(text, /listen 80;/, `listen 127.0.0.1:${httpPort};`)
  text = replaceOnce(text, /listen 443 ssl http2;/, `listen 127.0.0.1:${httpsPort} ssl http2;`)
  text = replaceOnce(text, /ssl_certificate +\S+;/, `ssl_certificate ${join(dir, 'cert.pem')};`)
  text = replaceOnce(text, /ssl_certificate_key +\S+;/, `ssl_certificate_key ${join(dir, 'key.pem')};`)
  if (edit !== undefined) text = edit(text)
  writeFileSync(join(dir, 'site.conf'), text)
  // What Debian's /etc/nginx/nginx.conf gives the conf.d file, in a prefix of our own.
  writeFileSync(join(dir, 'nginx.conf'), `
daemon off;
master_process off;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 256; }
http {
  access_log ${join(dir, 'access.log')};
  default_type application/octet-stream;
  client_body_temp_path ${join(dir, 'body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  include ${join(dir, 'site.conf')};
}
`)
  // Guarded: should the test process die without its teardown, nginx dies too.
  const guarded = spawnGuarded(binary, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['pipe', 'ignore', 'pipe'] })
  const child = guarded.child
  let stderr = ''
  child.stderr?.on('data', chunk => { stderr += String(chunk) })
  const errorLog = (): string => { try { return readFileSync(join(dir, 'error.log'), 'utf8') } catch { return '' } }
  const stop = async (): Promise<void> => {
    await guarded.stop()
    rmSync(dir, { recursive: true, force: true })
  }
  t.teardown(stop)
  // Listening once both ports accept (bounded): nginx starting up, not the behaviour under test.
  const deadline = Date.now() + 10_000
  for (const port of [httpPort, httpsPort]) {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}: ${stderr}${errorLog()}`)
      const ok = await new Promise<boolean>(resolve => {
        const socket = connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
        socket.once('error', () => resolve(false))
      })
      if (ok) break
      if (Date.now() > deadline) throw new Error(`nginx did not listen on ${port} within 10 s: ${stderr}${errorLog()}`)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }
  return { http: `http://127.0.0.1:${httpPort}`, https: `https://127.0.0.1:${httpsPort}`, site: text, errorLog, stop }
}
