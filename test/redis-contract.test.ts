// The hub's contract suite on the Redis backend: the same behaviour files
// that run on the memory backend, run again with every app on Redis
// (test/helpers/index.ts gives apps a Redis backend when HUB_BACKEND=redis).
// Memory-only bounds (maxHistoryBytes, maxIdleTopics) are not part of it.
import t from 'tap'
import { redisSkip } from './helpers/redis.js'

const skip = redisSkip()
if (skip !== false) {
  t.skip(skip)
} else {
  process.env.HUB_BACKEND = 'redis'
  const files = [
    './hub-smoke.test.js',
    './resume.test.js',
    './reset.test.js',
    './resume-race.test.js',
    './stream-subscribe.test.js',
    './payload-validation.test.js',
    './topic-params.test.js',
    './authorize.test.js',
    './max-connections.test.js',
    './server-subscribe.test.js',
    './channel-definition.test.js',
    './lifetime.test.js',
    './disconnect.test.js',
    './client-caps.test.js',
    './initial-state.test.js',
    './metrics.test.js',
    './runs.test.js'
  ]
  for (const file of files) await import(file)
}
