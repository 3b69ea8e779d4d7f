// The fluoroscopy panel's slider round trip in headless Chromium (bench/viewer_drr.sh):
// prints one JSON line with the median, min and max of 10 preview round trips.
import { readFileSync } from 'node:fs'
import { chromium } from '../web/node_modules/playwright-core/index.mjs'
import { moveSliderTenTimes } from '../web/e2e/drr-sliders.mjs'

const url = process.argv[2]

// Software WebGL keeps Chromium's GPU process busy for a minute after the volumes load
// (textures, the 3-D view): wait until the machine is idle (≥ 80 % over 2 s, Linux
// /proc/stat) so the slider is measured as a user would meet it, not during start-up.
function cpuTimes() {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  return { idle: fields[3] + (fields[4] || 0), total: fields.reduce((a, b) => a + b, 0) }
}
async function waitForIdleMachine(limitMs = 240_000) {
  const started = Date.now()
  while (Date.now() - started < limitMs) {
    const a = cpuTimes()
    await new Promise((r) => setTimeout(r, 2000))
    const b = cpuTimes()
    if ((b.idle - a.idle) / Math.max(1, b.total - a.total) >= 0.8) break
  }
  return Date.now() - started
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--no-sandbox'],
})
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
  await page.goto(url)
  await page.waitForFunction(() => window.pinhole?.volumesLoaded, null, { timeout: 300_000 })
  const settleMs = await waitForIdleMachine()
  const result = await moveSliderTenTimes(page, 300_000)
  console.log(JSON.stringify({ page: 'drr slider round trip, 512² preview', settle_ms: settleMs, ...result }))
} finally {
  await browser.close()
}
