/**
 * A self-signed certificate for 127.0.0.1 and localhost, made with openssl
 * for one test run (HTTP/2 needs TLS in browsers). Where openssl is missing
 * the suite is skipped with one line saying how to install it, except under
 * CI=true, where its absence fails.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const NO_OPENSSL = 'openssl not found; install it with: apt-get install -y openssl'

export function opensslSkip (): string | false {
  if (spawnSync('openssl', ['version']).status === 0) return false
  if (process.env.CI === 'true') throw new Error(NO_OPENSSL + ' (CI=true: the TLS suites must run)')
  return NO_OPENSSL
}

export function selfSigned (): { key: Buffer, cert: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'sse-hub-tls-'))
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '1',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'
    ], { stdio: 'ignore' })
    return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
