// Reading another process's CPU time and memory from /proc (Linux), so the
// servers need no cooperation and the measurement costs them nothing.
import { readFileSync, readdirSync } from 'node:fs'

/** CPU time of every thread of `pid`, in microseconds (schedstat: ns precision). */
export function cpuUs (pid) {
  try {
    let ns = 0
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1').split(' ')[0])
      } catch {}
    }
    return ns / 1000
  } catch {
    return NaN
  }
}

/**
 * CPU demand of `pid` in microseconds: time on a CPU plus time spent runnable
 * but waiting for one (schedstat fields 1 and 2), all threads. A process
 * starved by other load shows demand without CPU time.
 */
export function demandUs (pid) {
  try {
    let ns = 0
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const f = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1').split(' ')
        ns += Number(f[0]) + Number(f[1])
      } catch {}
    }
    return ns / 1000
  } catch {
    return NaN
  }
}

/** Resident set size of `pid` in bytes. */
export function rssBytes (pid) {
  try {
    const pages = Number(readFileSync(`/proc/${pid}/statm`, 'latin1').split(' ')[1])
    return pages * 4096
  } catch {
    return NaN
  }
}

/** The CPUs this process may run on (Cpus_allowed_list), e.g. [0, 1]. */
export function allowedCpus () {
  try {
    const line = readFileSync('/proc/self/status', 'latin1').split('\n').find(l => l.startsWith('Cpus_allowed_list:'))
    const out = []
    for (const part of line.split(':')[1].trim().split(',')) {
      const [a, b] = part.split('-').map(Number)
      for (let c = a; c <= (b ?? a); c++) out.push(c)
    }
    return out
  } catch {
    return []
  }
}

export function cpuModel () {
  try {
    const line = readFileSync('/proc/cpuinfo', 'latin1').split('\n').find(l => l.startsWith('model name'))
    return line.split(':')[1].trim()
  } catch {
    return 'unknown'
  }
}

/** Busy CPU time of the whole machine (all cores), in microseconds (from /proc/stat, 10 ms ticks). */
export function machineBusyUs () {
  try {
    const f = readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal
    const busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
    return busy * 10000
  } catch {
    return NaN
  }
}
