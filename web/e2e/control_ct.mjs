// End-to-end test of the viewer's Control CT panel in real headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core). Run by crates/cli's integration tests
// (viewer.rs), which start `pinhole serve` with a plan (PINHOLE_URL) and write two
// control scans (CONTROL_SCANS: two .nii.gz paths separated by ':', the needle advanced
// between them). This script POSTs each to /api/control-ct once the page is up and checks:
// the panel is hidden before any scan, appears, the detected needle is drawn for the
// first scan, moves when the second one is checked, the panel shows tip → target and the
// correction, and the browser console stays free of errors. Prints a JSON summary as its
// last line.
import { mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const url = process.env.PINHOLE_URL
const scans = (process.env.CONTROL_SCANS || '').split(':').filter(Boolean)
const outDir = process.argv[2] || 'target/e2e-control-ct'
mkdirSync(outDir, { recursive: true })

const consoleLog = []
function fail(message) {
  console.error(`browser console:\n${consoleLog.slice(-30).join('\n')}`)
  console.error(`e2e FAILED: ${message}`)
  process.exitCode = 1
  throw new Error(message)
}

async function waitFor(page, predicate, what, arg = null, timeoutMs = 240_000) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: timeoutMs, polling: 100 })
  } catch {
    fail(`timed out waiting for ${what}`)
  }
}

// POSTs a control scan from Node (no Origin header: not a page of another site).
async function post(path) {
  const response = await fetch(new URL('/api/control-ct', url), { method: 'POST', body: readFileSync(path) })
  const body = await response.json()
  if (response.status !== 202) fail(`POST ${path}: HTTP ${response.status} ${JSON.stringify(body)}`)
  return body.seq
}

const distance = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2])

if (!url) fail('PINHOLE_URL is not set')
if (scans.length !== 2) fail('CONTROL_SCANS must name two control scans')
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
  // Polls have been answered "no control scan yet": the panel must still be hidden.
  await page.waitForTimeout(1500)
  const hiddenBefore = await page.evaluate(() => document.getElementById('control-ct')?.hidden)
  if (hiddenBefore !== true) fail('the control CT panel shows before any scan (or is missing)')

  const shown = []
  for (const path of scans) {
    const seq = await post(path)
    await waitFor(
      page,
      (s) => window.pinhole.controlCt?.seq === s && window.pinhole.controlCt.state !== 'processing',
      `control scan #${seq} to be checked`,
      seq,
    )
    const check = await page.evaluate(() => window.pinhole.controlCt)
    if (check.state !== 'done' || !check.findings?.found) {
      fail(`control scan #${seq} gave no needle: ${JSON.stringify({ state: check.state, error: check.error, findings: check.findings })}`)
    }
    await waitFor(page, (s) => window.pinhole.controlNeedleShown?.seq === s, `the needle of scan #${seq} to be drawn`, seq)
    const drawn = await page.evaluate(() => ({
      needle: window.pinhole.controlNeedleShown,
      panel: {
        state: document.getElementById('cc-state').textContent,
        tipToTarget: document.getElementById('cc-tip-to-target').textContent,
        angle: document.getElementById('cc-angle').textContent,
        correction: document.getElementById('cc-correction').textContent,
        message: document.getElementById('cc-message').textContent,
      },
      reported: window.pinhole.controlCt.findings.needle.tip_planning_lps,
      tipToTargetMm: window.pinhole.controlCt.findings.metrics.tip_to_target_mm,
    }))
    // The line on screen is the reported needle (NiiVue stores the nodes as float32).
    if (distance(drawn.needle.tip_lps, drawn.reported) > 0.01) fail(`the drawn tip is not the reported one: ${JSON.stringify(drawn)}`)
    if (!/ mm$/.test(drawn.panel.tipToTarget)) fail(`the panel shows no tip → target: ${JSON.stringify(drawn.panel)}`)
    if (drawn.panel.correction.length === 0) fail(`the panel shows no correction: ${JSON.stringify(drawn.panel)}`)
    shown.push({ seq, ...drawn })
  }
  const movedMm = distance(shown[0].needle.tip_lps, shown[1].needle.tip_lps)
  await page.locator('#control-ct').screenshot({ path: join(outDir, 'control-ct-panel.png'), timeout: 60_000 })
  await page.screenshot({ path: join(outDir, 'control-ct-viewer.png'), timeout: 60_000 })
  const errors = await page.evaluate(() => window.pinhole.errors)
  consoleErrors.push(...errors)
  if (consoleErrors.length > 0) fail(`console errors:\n${consoleErrors.join('\n')}`)
  console.log(JSON.stringify({ ok: true, url, hidden_before_scans: hiddenBefore, shown, needle_moved_mm: movedMm }))
} finally {
  await browser.close()
}
