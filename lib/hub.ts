/**
 * The hub behind `fastify.sse`: this process's streams and, with the channel
 * layer, the fan-out from publishes to every subscriber.
 */
import type { Pump } from './stream.js'

/** Live counts for this process, cheap enough to read per request. */
export interface SseStats {
  /** Streams open now. */
  openStreams: number
  /** Streams opened since the plugin started. */
  streamsOpened: number
  /** Streams cut for holding more than `maxBufferedBytes` unsent. */
  slowClientCuts: number
  /** Socket writes made; each connection gets at most one per event-loop turn. */
  writes: number
  /** Heartbeat comments written to idle streams. */
  heartbeats: number
}

/** `fastify.sse`: the hub of this plugin instance. */
export class SseHub {
  /** @internal */
  readonly pump: Pump

  /** @internal Created by the plugin. */
  constructor (pump: Pump) {
    this.pump = pump
  }

  /** Live counts for this process; see {@link SseStats}. */
  stats (): SseStats {
    const p = this.pump
    return {
      openStreams: p.streams.size,
      streamsOpened: p.opened,
      slowClientCuts: p.slowClientCuts,
      writes: p.writes,
      heartbeats: p.heartbeats
    }
  }

  /** Ends every open stream (each told to reconnect after a jittered delay). `fastify.close()` calls this. */
  async close (): Promise<void> {
    this.pump.shutdown()
  }
}
