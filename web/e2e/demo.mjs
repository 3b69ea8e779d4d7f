// End-to-end test of `pinhole demo` in real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core). Run by crates/cli's integration tests (or by hand:
// `PINHOLE_BIN=target/release/pinhole node web/e2e/demo.mjs OUT_DIR`).
// Fails on any browser console error.
import { spawn } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const bin = process.env.PINHOLE_BIN || 'target/release/pinhole'
const outDir = process.argv[2] || 'target/e2e'
const port = process.env.PINHOLE_HTTP_PORT || '18080'
const igtlPort = process.env.PINHOLE_IGTL_PORT || '18945'
const extraArgs = process.env.PINHOLE_DEMO_ARGS ? process.env.PINHOLE_DEMO_ARGS.split(' ') : []
mkdirSync(outDir, { recursive: true })

const consoleLog = []
function fail(message) {
  console.error(`browser console:\n${consoleLog.slice(-30).join('\n')}`)
  console.error(`e2e FAILED: ${message}`)
  process.exitCode = 1
  throw new Error(message)
}

async function startDemo() {
  const args = ['demo', '--no-open', '--http-port', port, '--igtl-port', igtlPort, '--out', join(outDir, 'demo'), ...extraArgs]
  const demo = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  demo.stderr.on('data', (d) => (log += d))
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo printed no URL in 300 s:\n${log}`)), 300_000)
    demo.stdout.on('data', (d) => {
      log += d
      const match = /http:\/\/127\.0\.0\.1:\d+\/?/.exec(log)
      if (match) {
        clearTimeout(timer)
        resolve(match[0])
      }
    })
    demo.on('exit', (code) => reject(new Error(`demo exited early (${code}):\n${log}`)))
  })
  return { demo, url, log: () => log }
}

async function waitFor(page, predicate, what, timeoutMs = 120_000) {
  try {
    await page.waitForFunction(predicate, null, { timeout: timeoutMs, polling: 100 })
  } catch {
    fail(`timed out waiting for ${what}`)
  }
}

const { demo, url, log } = await startDemo()
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--no-sandbox'],
})
const consoleErrors = []
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
  page.on('console', (msg) => {
    consoleLog.push(`${msg.type()}: ${msg.text()}`)
    if (msg.type() === 'error') consoleErrors.push(msg.text())
  })
  page.on('pageerror', (err) => {
    consoleLog.push(`pageerror: ${err}`)
    consoleErrors.push(String(err))
  })
  await page.goto(url)
  await waitFor(page, () => window.pinhole?.volumesLoaded, 'the CT and labels to load in NiiVue')

  await waitFor(page, () => window.pinhole.guidanceUpdates > 2 && window.pinhole.needleTipLps, 'live guidance updates')
  // The replay loops an insertion with a short pause between runs: watch for up to 30 s.
  const tipA = await page.evaluate(() => window.pinhole.needleTipLps)
  let moved = 0
  for (let waited = 0; waited < 30_000 && !(moved > 0.5); waited += 250) {
    await page.waitForTimeout(250)
    const tipB = await page.evaluate(() => window.pinhole.needleTipLps)
    moved = Math.hypot(...tipA.map((v, i) => v - tipB[i]))
  }
  if (!(moved > 0.5)) fail(`needle marker did not move during replay (moved ${moved} mm)`)
  const panel = await page.evaluate(() => ({
    tipToTarget: document.getElementById('g-tip-to-target').textContent,
    nearest: document.getElementById('g-nearest').textContent,
    alert: document.getElementById('alert-badge').textContent,
  }))
  if (!/\d+\.\d mm/.test(panel.tipToTarget)) fail(`guidance panel shows no distance: ${JSON.stringify(panel)}`)

  await waitFor(page, () => window.pinhole.drrLoads >= 1, 'the first DRR')
  const firstDrr = await page.evaluate(() => document.getElementById('drr').src)
  await page.evaluate(() => {
    const slider = document.getElementById('lao')
    slider.value = '30'
    slider.dispatchEvent(new Event('input'))
  })
  await waitFor(page, () => window.pinhole.drrPose?.lao_deg === 30, 'a new DRR at LAO 30')
  const secondDrr = await page.evaluate(() => document.getElementById('drr').src)
  if (secondDrr === firstDrr) fail('DRR image did not change with the C-arm angle')

  await page.screenshot({ path: join(outDir, 'viewer.png'), timeout: 180_000 })
  const errors = await page.evaluate(() => window.pinhole.errors)
  consoleErrors.push(...errors)
  if (consoleErrors.length > 0) fail(`console errors:\n${consoleErrors.join('\n')}`)
  console.log(JSON.stringify({ ok: true, url, needle_moved_mm: moved, panel }))
} finally {
  await browser.close()
  demo.kill('SIGINT')
  const code = await new Promise((resolve) => demo.on('exit', (c, s) => resolve(c ?? s)))
  if (code !== 0) {
    console.error(`demo did not end cleanly on Ctrl-C (exit ${code}):\n${log()}`)
    process.exitCode = 1
  }
}
