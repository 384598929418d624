// The ceiling for Node: plain node:http where each event-loop turn's events
// of a topic are framed ONCE into one HTTP/1.1 chunk (one Buffer) and that
// same Buffer is written straight to every subscriber's socket. One write per
// connection per turn, nothing per subscriber but the write itself
// (chunk-fanout.mjs).
import http from 'node:http'
import { args, httpRoutes, onTerm, ready } from './common.mjs'
import { chunkFanout } from './chunk-fanout.mjs'

const opts = args()
const fan = chunkFanout()

const server = http.createServer((req, res) => {
  const url = req.url
  if (req.method === 'GET' && url.startsWith('/sse/')) {
    fan.follow(url.slice(5), res)
    return
  }
  if (req.method === 'POST' && url.startsWith('/publish/')) {
    const name = url.slice(9)
    const parts = []
    req.on('data', (c) => parts.push(c))
    req.on('end', () => {
      if (fan.wants(name)) fan.publish(name, Buffer.concat([Buffer.from('event: tick\ndata: '), ...parts, Buffer.from('\n\n')]))
      res.writeHead(204)
      res.end()
    })
    return
  }
  if (httpRoutes(req, res, () => fan.subscribers)) return
  res.writeHead(404)
  res.end()
})

server.listen(opts.port, opts.host, () => ready(server.address().port))
onTerm(() => { server.closeAllConnections(); server.close() })
