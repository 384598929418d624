// Runs the type tests (typetests/*.tst.ts, `npm run test:types`) under tap,
// so CI runs them: the client's handlers are typed from the channel schemas,
// and wrong payloads, unknown events and bad topic params do not compile.
import t from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
// Three files, one with TypeBox 1.x and its type provider: ~50 s alone, up to 3 min on a loaded 2-core machine.
t.setTimeout(300_000)

t.test('tstyche: every type test passes', { timeout: 280_000 }, async t => {
  const child = spawn(process.execPath, ['node_modules/tstyche/build/bin.js'], { cwd: root, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk })
  child.stderr.on('data', (chunk: Buffer) => { out += chunk })
  const code = await new Promise<number | null>(resolve => child.on('close', resolve))
  // eslint-disable-next-line no-control-regex
  const text = out.replace(/\x1b\[[0-9;]*m/g, '')
  t.equal(code, 0, 'tstyche exits 0')
  if (code !== 0) t.comment(text)
  const files = /Test files:\s+(.*)/.exec(text)?.[1] ?? ''
  t.match(files, /^\d+ passed, \d+ total$/, 'every type test file passed: ' + files)
  t.match(text, /Assertions:\s+\d+ passed/, 'assertions ran')
  t.match(text, /Suppressed:\s+(\d+) matched, \1 total/, 'every @ts-expect-error matched its expected error')
  t.match(text, /client\.tst\.ts/, 'the client type tests ran')
  t.match(text, /server\.tst\.ts/, 'the server type tests ran')
  t.match(text, /ecosystem\.tst\.ts/, 'the ecosystem type tests ran (TypeBox 1.x, type provider, typed authorize params, handler forms)')
})
