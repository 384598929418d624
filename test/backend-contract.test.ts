// The backend contract suite, run the way a third-party backend would run
// it (`fastify-sse-hub/testing`): against the memory backend, and against
// two Redis backends sharing one redis-server.
import t from 'tap'
import { backendContract } from '../lib/contract.js'
import { memoryBackend } from '../lib/index.js'
import { redisBackend } from '../lib/redis.js'
import { RedisServer, redisSkip } from './helpers/redis.js'

t.test('memory backend', async t => {
  backendContract(t, { create: () => memoryBackend() })
})

t.test('redis backend', async t => {
  const skip = redisSkip()
  if (skip !== false) return t.skip(skip)
  const server = await new RedisServer().start()
  t.teardown(() => server.stop())
  backendContract(t, { create: () => redisBackend({ url: server.url, prefix: 'contract' }), shared: true })
})
