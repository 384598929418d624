/**
 * Fresh consumer projects, installed the way a user installs the package:
 * `npm pack` of this checkout, then a project whose package.json names the
 * tarball next to the packages it brings (a TypeBox major, its type
 * provider, TypeScript), installed by npm.
 *
 * Installing per run would cost 10-30 s per project, so the npm install is
 * cached under node_modules/.cache/sse-hub-consumers, keyed by everything
 * that decides its tree: the project's dependencies, this package's
 * dependencies and peers, and the Node and npm versions. Every run then
 * packs the package anew and makes a temp project whose node_modules holds
 * the freshly unpacked tarball beside links to the cached install's other
 * packages: what is tested is exactly what `npm pack` ships (files, exports,
 * types), resolved against a tree npm itself resolved for it.
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = fileURLToPath(new URL('../..', import.meta.url))
const cacheRoot = join(root, 'node_modules', '.cache', 'sse-hub-consumers')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

/** `npm pack` of this checkout (dist/ as built) into a temp dir; returns the tarball's path. */
export function pack (): string {
  if (!existsSync(join(root, 'dist', 'esm', 'index.js'))) {
    execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit', timeout: 120_000 })
  }
  const dir = mkdtempSync(join(tmpdir(), 'sse-hub-pack-'))
  // --ignore-scripts: dist/ is already built (npm test builds first); prepare would rebuild it.
  const out = execFileSync(npm, ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: root, encoding: 'utf8', timeout: 60_000 })
  return join(dir, out.trim().split('\n').pop() as string)
}

/** A consumer project: a temp dir with package.json, node_modules and whatever files the test writes. */
export interface Consumer {
  dir: string
  /** Writes `files` (path relative to the project -> content). */
  write: (files: Record<string, string>) => void
  /** Runs a command in the project; returns its exit code and output (stdout then stderr). */
  run: (file: string, args: string[], timeout?: number) => { code: number, out: string }
  remove: () => void
}

/**
 * Makes a consumer project with `dependencies` installed beside the packed
 * `tarball`. The first call for a set of dependencies runs npm install
 * (network or npm's cache); later calls reuse it.
 */
export function consumer (name: string, dependencies: Record<string, string>, tarball: string): Consumer {
  const ours = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
  const key = createHash('sha256').update(JSON.stringify({
    dependencies,
    ours: { dependencies: ours.dependencies, peerDependencies: ours.peerDependencies, peerDependenciesMeta: ours.peerDependenciesMeta },
    node: process.versions.node.split('.')[0],
    npm: execFileSync(npm, ['--version'], { encoding: 'utf8' }).trim()
  })).digest('hex').slice(0, 16)
  const cached = join(cacheRoot, `${name}-${key}`)
  if (!existsSync(join(cached, 'node_modules', '.installed'))) {
    const staging = `${cached}.tmp-${process.pid}`
    rmSync(staging, { recursive: true, force: true })
    mkdirSync(staging, { recursive: true })
    execFileSync('cp', [tarball, join(staging, 'fastify-sse-hub.tgz')])
    writeFileSync(join(staging, 'package.json'), JSON.stringify({
      name: `consumer-${name}`,
      private: true,
      type: 'module',
      dependencies: { ...dependencies, 'fastify-sse-hub': 'file:./fastify-sse-hub.tgz' }
    }, null, 2))
    execFileSync(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: staging, stdio: ['ignore', 'ignore', 'inherit'], timeout: 300_000 })
    writeFileSync(join(staging, 'node_modules', '.installed'), new Date().toISOString())
    rmSync(cached, { recursive: true, force: true })
    try { renameSync(staging, cached) } catch { rmSync(staging, { recursive: true, force: true }) } // another run got there first: same tree
    // Installs for older dependency sets of this project are stale now.
    for (const entry of readdirSync(cacheRoot)) {
      if (entry.startsWith(`${name}-`) && !entry.includes('.tmp-') && join(cacheRoot, entry) !== cached) rmSync(join(cacheRoot, entry), { recursive: true, force: true })
    }
  }

  const dir = mkdtempSync(join(tmpdir(), `sse-hub-consumer-${name}-`))
  const modules = join(dir, 'node_modules')
  mkdirSync(modules)
  for (const entry of readdirSync(join(cached, 'node_modules'))) {
    if (entry === 'fastify-sse-hub' || entry.startsWith('.')) continue
    if (entry.startsWith('@')) {
      mkdirSync(join(modules, entry))
      for (const scoped of readdirSync(join(cached, 'node_modules', entry))) symlinkSync(join(cached, 'node_modules', entry, scoped), join(modules, entry, scoped), 'dir')
    } else {
      symlinkSync(join(cached, 'node_modules', entry), join(modules, entry), 'dir')
    }
  }
  // The package itself: this run's tarball, unpacked the way npm unpacks it.
  execFileSync('tar', ['-xzf', tarball, '-C', dir])
  renameSync(join(dir, 'package'), join(modules, 'fastify-sse-hub'))
  writeFileSync(join(dir, 'package.json'), readFileSync(join(cached, 'package.json')))

  return {
    dir,
    write (files) {
      for (const [file, content] of Object.entries(files)) {
        mkdirSync(dirname(join(dir, file)), { recursive: true })
        writeFileSync(join(dir, file), content)
      }
    },
    run (file, args, timeout = 60_000) {
      try {
        const out = execFileSync(file, args, { cwd: dir, encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] })
        return { code: 0, out }
      } catch (err) {
        const e = err as { status?: number, stdout?: string, stderr?: string, message: string }
        return { code: e.status ?? 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` || e.message }
      }
    },
    remove () { rmSync(dir, { recursive: true, force: true }) }
  }
}
