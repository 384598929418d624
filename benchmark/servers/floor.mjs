// The floor: plain node:http, each event written to each response with
// res.write() as it arrives. No framework, no batching.
import http from 'node:http'
import { args, httpRoutes, onTerm, ready } from './common.mjs'

const opts = args()
const topics = new Map() // topic -> Set<ServerResponse>
let subscribers = 0

const server = http.createServer((req, res) => {
  const url = req.url
  if (req.method === 'GET' && url.startsWith('/sse/')) {
    const name = url.slice(5)
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    res.write(': ok\n\n')
    let set = topics.get(name)
    if (set === undefined) topics.set(name, set = new Set())
    set.add(res)
    subscribers++
    res.on('close', () => {
      set.delete(res)
      subscribers--
      if (set.size === 0 && topics.get(name) === set) topics.delete(name)
    })
    return
  }
  if (req.method === 'POST' && url.startsWith('/publish/')) {
    const name = url.slice(9)
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c) => { body += c })
    req.on('end', () => {
      const set = topics.get(name)
      if (set !== undefined) {
        const frame = 'event: tick\ndata: ' + body + '\n\n'
        for (const r of set) r.write(frame)
      }
      res.writeHead(204)
      res.end()
    })
    return
  }
  if (httpRoutes(req, res, () => subscribers)) return
  res.writeHead(404)
  res.end()
})

server.listen(opts.port, opts.host, () => ready(server.address().port))
onTerm(() => { server.closeAllConnections(); server.close() })
