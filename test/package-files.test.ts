/**
 * What npm ships: every relative link and image of the shipped Markdown
 * (README.md, docs/*.md, benchmark/*.md) points at a file that is in the
 * package, so the README works on the npm page and from node_modules; the
 * source and declaration maps resolve to shipped sources; the metadata npm
 * shows (repository, homepage, bugs) is there.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))

t.before(() => {
  if (!existsSync(join(root, 'dist', 'esm', 'index.js'))) execFileSync(process.execPath, ['scripts/build.js'], { cwd: root, stdio: 'inherit', timeout: 120_000 })
})

function packedFiles (): Set<string> {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8', timeout: 60_000 })
  return new Set((JSON.parse(out) as Array<{ files: Array<{ path: string }> }>)[0].files.map(f => f.path))
}

t.test('every relative link of the shipped Markdown resolves inside the package', async t => {
  const files = packedFiles()
  const markdown = [...files].filter(f => f.endsWith('.md'))
  t.ok(markdown.includes('README.md') && markdown.includes('docs/redis.md'), 'README and docs ship')
  let links = 0
  for (const file of markdown) {
    const text = readFileSync(join(root, file), 'utf8')
    for (const m of text.matchAll(/!?\[[^\]]*\]\(([^)\s]+)\)/g)) {
      const target = m[1]
      if (/^[a-z]+:|^#/.test(target)) continue
      const path = posix.normalize(posix.join(posix.dirname(file), target.split('#')[0]))
      links++
      t.ok(files.has(path), `${file}: ${target} -> ${path} is in the package`)
    }
  }
  t.ok(links >= 8, `links checked: ${links}`)
})

t.test('source and declaration maps point at shipped sources', async t => {
  const files = packedFiles()
  for (const map of ['dist/esm/channel.js.map', 'dist/esm/channel.d.ts.map', 'dist/cjs/channel.js.map']) {
    t.ok(files.has(map), `${map} ships`)
    const { sources } = JSON.parse(readFileSync(join(root, map), 'utf8')) as { sources: string[] }
    for (const source of sources) {
      const path = posix.normalize(posix.join(dirname(map), source))
      t.ok(files.has(path), `${map}: ${source} -> ${path} ships`)
    }
  }
})

t.test('package.json says where the project lives', async t => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
  t.match(pkg.repository, { type: 'git', url: /^git\+https:\/\// })
  t.match(pkg.homepage, /^https:\/\//)
  t.match(pkg.bugs, { url: /^https:\/\// })
  t.ok(pkg.peerDependenciesMeta.typebox.optional && pkg.peerDependenciesMeta['@sinclair/typebox'].optional, 'both TypeBox majors are optional peers')
  t.notOk(pkg.dependencies['@sinclair/typebox'], 'no hard TypeBox dependency (an app on another version would get a second copy)')
})
