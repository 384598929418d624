// neostandard: the style the Fastify organisation's own packages lint with
// (standard, flat config), TypeScript included.
import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    filesTs: ['**/*.cts', '**/*.mts'],
    ignores: ['dist/**', 'coverage/**', '.tap/**', 'benchmark/node_modules/**', 'benchmark/results/**', '.readme-check-*/**', '.auth-recipe-*.mjs']
  }),
  {
    rules: {
      // `void promise` marks a promise deliberately not awaited (its errors
      // are handled where it is made); as an expression void stays refused.
      'no-void': ['error', { allowAsStatement: true }]
    }
  },
  {
    // Load loops run until a flag another task flips (`while (publishing)`):
    // the rule cannot see the other task, so it would refuse every one.
    files: ['test/**', 'benchmark/**'],
    rules: { 'no-unmodified-loop-condition': 'off' }
  }
]
