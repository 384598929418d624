/** A raw TCP client that sends a GET and then never reads: the slowest client there is. */
import net from 'node:net'

export function stalledClient (url: string, path: string): Promise<net.Socket> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port) }, () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nAccept: text/event-stream\r\n\r\n`)
      // Never read: stop the flow so the kernel buffers fill and the server's
      // writes pile up in its own socket buffer.
      socket.pause()
      resolve(socket)
    })
    // A small receive buffer makes the server-side pile-up start sooner.
    socket.on('error', () => {})
    socket.once('error', reject)
  })
}
