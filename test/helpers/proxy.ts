/**
 * A TCP proxy the test controls, on 127.0.0.1: `pause()` holds every byte
 * in both directions (a link that lags, without closing), `resume()` lets
 * them through in order, `cut()` drops what was held and closes every
 * connection (writes that never arrived).
 */
import net from 'node:net'

export class TcpProxy {
  port = 0
  private server: net.Server | null = null
  private paused = false
  private readonly pairs = new Set<{ a: net.Socket, b: net.Socket, paused: boolean, held: Array<{ to: net.Socket, chunk: Buffer }> }>()
  /** Bytes held while paused (both directions), for the test's figures. */
  heldBytes = 0

  constructor (private readonly targetPort: number) {}

  async start (): Promise<this> {
    const server = net.createServer(client => {
      const upstream = net.connect(this.targetPort, '127.0.0.1')
      const pair = { a: client, b: upstream, paused: false, held: [] as Array<{ to: net.Socket, chunk: Buffer }> }
      this.pairs.add(pair)
      const forward = (to: net.Socket) => (chunk: Buffer) => {
        if (this.paused || pair.paused) {
          pair.held.push({ to, chunk })
          this.heldBytes += chunk.length
        } else {
          to.write(chunk)
        }
      }
      client.on('data', forward(upstream))
      upstream.on('data', forward(client))
      const close = (): void => {
        this.pairs.delete(pair)
        client.destroy()
        upstream.destroy()
      }
      client.on('close', close)
      upstream.on('close', close)
      client.on('error', close)
      upstream.on('error', close)
    })
    this.server = server
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    this.port = (server.address() as net.AddressInfo).port
    return this
  }

  pause (): void {
    this.paused = true
  }

  /**
   * Holds the bytes of one connection only: the one whose upstream socket
   * has local port `port` (what Redis's CLIENT LIST shows as its addr).
   * A silently wedged connection, the others untouched. False if none.
   */
  wedge (port: number): boolean {
    for (const pair of this.pairs) {
      if (pair.b.localPort === port) {
        pair.paused = true
        return true
      }
    }
    return false
  }

  resume (): void {
    this.paused = false
    for (const pair of this.pairs) {
      for (const { to, chunk } of pair.held) to.write(chunk)
      pair.held = []
    }
  }

  /** Drops everything held and closes every connection; new ones are still accepted (and forwarded unless paused). */
  cut (): void {
    for (const pair of this.pairs) {
      pair.held = []
      pair.a.destroy()
      pair.b.destroy()
    }
    this.pairs.clear()
  }

  async stop (): Promise<void> {
    this.cut()
    await new Promise<void>(resolve => this.server === null ? resolve() : this.server.close(() => resolve()))
  }
}
