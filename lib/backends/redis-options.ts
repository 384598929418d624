/**
 * The Redis backend's options: what `redisBackend()` takes, checked once
 * when the backend is made (a bad option throws a coded error there).
 */
import type { Redis, RedisOptions } from 'ioredis'
import { FST_ERR_SSEHUB_OPTION_INVALID } from '../errors.js'
import { int } from '../options.js'

/** Options of `redisBackend()`. */
export interface RedisBackendOptions {
  /**
   * Where Redis is (`redis://`, `rediss://` for TLS, with user and password
   * for ACLs). Ignored when `redis` is given.
   * @default 'redis://127.0.0.1:6379'
   */
  url?: string
  /**
   * An ioredis client to use for commands instead of opening one. The plugin
   * opens one more connection for subscriptions (`redis.duplicate()`), and
   * closes only that one.
   */
  redis?: Redis
  /** Extra ioredis options for the connections the plugin opens (TLS, Sentinel, timeouts). */
  redisOptions?: RedisOptions
  /**
   * Prefix of every key and pub/sub channel, so several apps share a Redis.
   * Letters, digits, `_ . : -`. Keys carry it as a hash tag (`{prefix}`).
   * @default 'sse'
   */
  prefix?: string
  /**
   * The longest a publish waits for Redis (the script, and the replicas'
   * acknowledgement under `durable`), in ms. Past it the publish is refused
   * with `FST_ERR_SSEHUB_BACKEND_TIMEOUT` (503); the event may still be
   * published once Redis answers. Also how long the subscriber connection
   * may leave a liveness probe unanswered before the stall is reported.
   * (History reads are not bounded by it; ioredis's own `commandTimeout`
   * in `redisOptions` would bound every command.)
   * @default 2000
   */
  commandTimeout?: number
  /**
   * How often the subscriber connection is probed (a `PING`, which Redis
   * answers in subscribed mode), in ms. A probe unanswered for
   * `commandTimeout` is a stall: `stats().backend.connected` turns false,
   * one warning is logged, publishes are refused at once, and when Redis
   * answers again every stream catches up from history. A stall is reported
   * at most `probeInterval + commandTimeout` after it began. 0 turns probing off.
   * @default 1000
   */
  probeInterval?: number
  /**
   * How long `register()` (the backend's start) waits for Redis, in ms,
   * before failing with `FST_ERR_SSEHUB_REDIS_UNREACHABLE`, which names the
   * address and the last connection error. Keep it under Fastify's
   * `pluginTimeout` (10 s by default).
   * @default 5000
   */
  startTimeout?: number
  /**
   * Durable publish: a publish resolves only once `replicas` replicas
   * acknowledged it (Redis `WAIT`, at most `timeout` ms), else it is refused
   * with `FST_ERR_SSEHUB_PUBLISH_NOT_REPLICATED` (503), although the event is
   * stored on the primary and may have been delivered. With Sentinel, an
   * acknowledged event survives the failover to any replica that
   * acknowledged it. `timeout` must be below `commandTimeout`.
   * @default undefined (a publish resolves once the primary ran it)
   */
  durable?: { replicas: number, timeout?: number }
  /**
   * The lease of a producer run (`fastify.sse.run()`), in ms: the instance
   * running it renews it every third of this; when that instance dies (or
   * loses Redis for longer), another instance ends the run with
   * `end { reason: 'lost' }` about 1.5 x this after the last renewal (every
   * instance sweeps expired leases every half of this), and the stale
   * producer can publish nothing more into it.
   * @default 5000
   */
  runLease?: number
}

const PREFIX = /^[A-Za-z0-9_.:-]{1,64}$/

/** The options as the backend uses them: checked, defaults filled in. */
export interface RedisSettings {
  readonly prefix: string
  readonly commandTimeout: number
  readonly probeInterval: number
  readonly startTimeout: number
  readonly durable: { replicas: number, timeout: number } | null
  readonly runLease: number
}

/** Checks `options` and fills in the defaults; throws `FST_ERR_SSEHUB_OPTION_INVALID` for a bad one. */
export function redisSettings (options: RedisBackendOptions): RedisSettings {
  const prefix = options.prefix ?? 'sse'
  if (!PREFIX.test(prefix)) throw new FST_ERR_SSEHUB_OPTION_INVALID('prefix', 'must be 1 to 64 letters, digits, "_", ".", ":" or "-"')
  const commandTimeout = ms('commandTimeout', options.commandTimeout, 2_000, 1)
  const durable = options.durable
  let resolved: RedisSettings['durable'] = null
  if (durable !== undefined) {
    if (durable === null || typeof durable !== 'object' || !Number.isSafeInteger(durable.replicas) || durable.replicas < 1) {
      throw new FST_ERR_SSEHUB_OPTION_INVALID('durable', 'must be { replicas: a whole number >= 1, timeout?: ms }')
    }
    const timeout = ms('durable.timeout', durable.timeout, Math.min(500, commandTimeout - 1), 1)
    if (timeout >= commandTimeout) throw new FST_ERR_SSEHUB_OPTION_INVALID('durable.timeout', `must be below commandTimeout (${commandTimeout} ms)`)
    resolved = { replicas: durable.replicas, timeout }
  }
  return {
    prefix,
    commandTimeout,
    probeInterval: ms('probeInterval', options.probeInterval, 1_000, 0),
    startTimeout: ms('startTimeout', options.startTimeout, 5_000, 1),
    durable: resolved,
    runLease: ms('runLease', options.runLease, 5_000, 3)
  }
}

/** A whole number of ms in range, or the default. */
function ms (name: string, value: number | undefined, fallback: number, min: number): number {
  return value === undefined ? fallback : int(name, value, min, 2 ** 31 - 1)
}
