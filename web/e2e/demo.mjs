// End-to-end test of `pinhole demo` in real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core). Run by crates/cli's integration tests (or by hand:
// `PINHOLE_BIN=target/release/pinhole node web/e2e/demo.mjs OUT_DIR`).
// Fails on any browser console error.
import { spawn } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { moveSliderTenTimes } from './drr-sliders.mjs'

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

async function waitFor(page, predicate, what, arg = null, timeoutMs = 120_000) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: timeoutMs, polling: 50 })
  } catch {
    fail(`timed out waiting for ${what}`)
  }
}


// A click dispatched in the page (the busy software-GL page keeps Playwright's
// actionability checks waiting).
const clickIn = (page, selector) => page.evaluate((s) => document.querySelector(s).click(), selector)

// Pixels straight from NiiVue's WebGL canvas, read in the same task as a redraw.
const PAGE_HELPERS = () => {
  const nv = window.pinholeNiivue
  const toFrac = (lps) => nv.mm2frac([-lps[0], -lps[1], lps[2]])
  window.pinholeTest = {
    redraw() {
      nv.drawScene()
    },
    pixel(x, y) {
      const gl = nv.gl
      const p = new Uint8Array(4)
      gl.readPixels(Math.round(x), gl.drawingBufferHeight - 1 - Math.round(y), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, p)
      return Array.from(p)
    },
    tile(sliceType) {
      const s = nv.screenSlices.find((t) => t.axCorSag === sliceType)
      const [l, t, w, h] = s.leftTopWidthHeight
      return { left: Math.min(l, l + w), top: t, width: Math.abs(w), height: h }
    },
    // Crosshair to `lps`, then the canvas position of `lps` in the tile (0 axial, 1 coronal).
    canvasOf(lps, sliceType) {
      nv.scene.crosshairPos = toFrac(lps)
      nv.drawScene()
      return nv.frac2canvasPosWithTile(toFrac(lps), sliceType)?.pos
    },
    // Pixels of a tile whose colour is far from grey (lines, labels; not CT, not text).
    colouredPixels(sliceType) {
      const { left, top, width, height } = this.tile(sliceType)
      const gl = nv.gl
      const data = new Uint8Array(width * height * 4)
      gl.readPixels(left, gl.drawingBufferHeight - top - height, width, height, gl.RGBA, gl.UNSIGNED_BYTE, data)
      let n = 0
      for (let i = 0; i < data.length; i += 4) {
        const max = Math.max(data[i], data[i + 1], data[i + 2])
        const min = Math.min(data[i], data[i + 1], data[i + 2])
        if (max - min > 40) n += 1
      }
      return n
    },
    toFrac,
  }
}

// Radiological convention: the left-kidney needle (patient's left, +x in LPS) shows on the
// viewer's right of the body's midline in the axial and coronal views; the setting
// switches to neurological and back.
async function checkOrientation(page) {
  await page.evaluate(PAGE_HELPERS)
  const measure = () =>
    page.evaluate(() => {
      const t = window.pinholeTest
      const tip = window.pinhole.needleTipLps
      const nv = window.pinholeNiivue
      const centre = nv.frac2mm([0.5, 0.5, 0.5])
      const centreLps = [-centre[0], -centre[1], centre[2]]
      // The midline through the needle tip's slice.
      const midline = [centreLps[0], tip[1], tip[2]]
      const out = { tipLps: tip, centreLps }
      for (const [name, type] of [['axial', 0], ['coronal', 1]]) {
        const needleAt = t.canvasOf(tip, type)
        const midlineAt = t.canvasOf(midline, type)
        out[name] = { needleX: needleAt?.[0], midlineX: midlineAt?.[0] }
      }
      return out
    })
  const radiological = await measure()
  if (!(radiological.tipLps[0] > radiological.centreLps[0] + 20)) {
    fail(`the demo needle is not on the patient's left: ${JSON.stringify(radiological)}`)
  }
  for (const view of ['axial', 'coronal']) {
    const { needleX, midlineX } = radiological[view]
    if (!(needleX > midlineX + 20)) fail(`${view}: left-kidney needle not on the viewer's right: ${JSON.stringify(radiological)}`)
  }
  await clickIn(page, '#radiological')
  const neurological = await measure()
  for (const view of ['axial', 'coronal']) {
    const { needleX, midlineX } = neurological[view]
    if (!(needleX < midlineX - 20)) fail(`${view}: the neurological setting did not mirror the view: ${JSON.stringify(neurological)}`)
  }
  await clickIn(page, '#radiological')
  const stored = await page.evaluate(() => localStorage.getItem('pinhole.radiological'))
  if (stored !== 'true') fail(`radiological setting not remembered: ${stored}`)
  return { radiological: { axial: radiological.axial, coronal: radiological.coronal }, neurological: { axial: neurological.axial } }
}

// Label 0 is transparent: a pixel of air outside the body shows the CT's own grey with
// the labels on, while a pixel inside the target kidney changes colour with them.
async function checkTransparentBackground(page) {
  const result = await page.evaluate(() => {
    const t = window.pinholeTest
    const nv = window.pinholeNiivue
    const target = window.pinholeSession.target_lps
    const corner = nv.frac2mm([0.04, 0.04, nv.mm2frac([-target[0], -target[1], target[2]])[2]])
    const cornerLps = [-corner[0], -corner[1], corner[2]]
    const sample = (lps) => {
      const at = t.canvasOf(lps, 0)
      return at ? t.pixel(at[0], at[1]) : null
    }
    const crosshair = nv.opts.crosshairWidth
    nv.opts.crosshairWidth = 0
    nv.opts.meshThicknessOn2D = 0 // lines hidden: they end at the target
    const withLabels = { air: sample(cornerLps), target: sample(target) }
    nv.setOpacity(1, 0)
    const without = { air: sample(cornerLps), target: sample(target) }
    nv.setOpacity(1, 0.45)
    nv.opts.crosshairWidth = crosshair
    nv.opts.meshThicknessOn2D = window.pinhole.lineSlabMm
    return { withLabels, without, cornerLps }
  })
  const { withLabels, without } = result
  if (!withLabels.air || !withLabels.target) fail(`sample points off the axial view: ${JSON.stringify(result)}`)
  const same = (a, b) => a.every((v, i) => Math.abs(v - b[i]) <= 1)
  if (!same(withLabels.air, without.air)) fail(`air outside the body is tinted by the labels: ${JSON.stringify(result)}`)
  const grey = (p) => Math.max(p[0], p[1], p[2]) - Math.min(p[0], p[1], p[2]) <= 2
  if (!grey(withLabels.air)) fail(`air outside the body is not grey: ${JSON.stringify(result)}`)
  if (same(withLabels.target, without.target)) fail(`the target organ is not coloured by the labels: ${JSON.stringify(result)}`)
  return result
}

// Plan and route lines show on a slice only near it: none on an axial slice far from
// every line, some on the slice through the plan's target.
async function checkLinesOnlyNearTheirSlices(page) {
  const result = await page.evaluate(() => {
    const t = window.pinholeTest
    const nv = window.pinholeNiivue
    const session = window.pinholeSession
    const slab = window.pinhole.lineSlabMm
    const ranges = session.lines.map((l) => [Math.min(...l.points_lps.map((p) => p[2])), Math.max(...l.points_lps.map((p) => p[2]))])
    const tip = window.pinhole.needleTipLps
    ranges.push([tip[2] - 65, tip[2] + 65]) // the needle drawn 60 mm back from its tip
    const low = nv.frac2mm([0.5, 0.5, 0.02])[2]
    const high = nv.frac2mm([0.5, 0.5, 0.98])[2]
    let far = null
    for (let z = low; z <= high; z += 1) {
      const gap = Math.min(...ranges.map(([a, b]) => (z < a ? a - z : z > b ? z - b : 0)))
      if (gap > slab + 10 && (far === null || gap > far.gap)) far = { z, gap }
    }
    const target = session.target_lps
    const crosshair = nv.opts.crosshairWidth
    nv.opts.crosshairWidth = 0
    for (let v = 1; v < nv.volumes.length; v++) nv.setOpacity(v, 0)
    const count = (z) => {
      nv.scene.crosshairPos = nv.mm2frac([-target[0], -target[1], z])
      nv.drawScene()
      return t.colouredPixels(0)
    }
    const atTarget = count(target[2])
    const distant = far ? count(far.z) : null
    nv.opts.crosshairWidth = crosshair
    nv.setOpacity(1, 0.45)
    for (let v = 2; v < nv.volumes.length; v++) nv.setOpacity(v, (session.overlays[v - 2] || {}).opacity ?? 0.4)
    nv.scene.crosshairPos = nv.mm2frac([-target[0], -target[1], target[2]])
    nv.drawScene()
    return { atTarget, distant, distantZ: far?.z, gapMm: far?.gap }
  })
  if (result.distant === null) fail(`no axial slice far from every line: ${JSON.stringify(result)}`)
  if (!(result.atTarget > 20)) fail(`no line drawn on the target's slice: ${JSON.stringify(result)}`)
  if (result.distant !== 0) fail(`lines drawn on a slice ${result.gapMm.toFixed(0)} mm from them: ${JSON.stringify(result)}`)
  return result
}

async function checkReset(page) {
  await clickIn(page, '[data-preset=bone]')
  await clickIn(page, '#reset')
  const levels = await page.evaluate(() => [window.pinholeNiivue.volumes[0].cal_min, window.pinholeNiivue.volumes[0].cal_max])
  if (levels[0] !== -160 || levels[1] !== 240) fail(`Reset did not restore the soft-tissue window: ${levels}`)
}

// Ten slider moves, each answered by a new preview image; releasing the slider brings the
// full-quality one. Timing is reported (bench/viewer_drr.sh measures it on the chest CT).
async function checkDrrSliders(page) {
  let result
  try {
    result = await moveSliderTenTimes(page)
  } catch (error) {
    fail(error.message)
  }
  if (!result.imageChanged) fail('DRR image did not change with the C-arm angle')
  if (result.previews !== 10) fail(`expected 10 preview images, got ${result.previews}`)
  return result
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
    ahead: document.getElementById('g-ahead').textContent,
  }))
  if (!/\d+\.\d mm/.test(panel.tipToTarget)) fail(`guidance panel shows no distance: ${JSON.stringify(panel)}`)
  if (!/^(clear|.+ in \d+\.\d mm)$/.test(panel.ahead)) fail(`guidance panel shows no trajectory look-ahead: ${JSON.stringify(panel)}`)

  // Who steers the session: the replay's client is the tracking source, listed under the
  // warnings with its client, peer and device (the list refreshes every 5 s).
  await waitFor(
    page,
    () => [...document.querySelectorAll('#source-events li')].some((li) => /tracking source: .+ \(client \d+, 127\.0\.0\.1:\d+, .+\)$/.test(li.textContent)),
    'the tracking source in the viewer\'s source events',
    null,
    30_000,
  )
  const sourceEvents = await page.evaluate(() => ({
    items: [...document.querySelectorAll('#source-events li')].map((li) => li.textContent),
    title: document.getElementById('warnings-title').textContent,
  }))
  if (!/\d+ source events?/.test(sourceEvents.title)) fail(`the banner does not count the source events: ${JSON.stringify(sourceEvents)}`)

  const orientation = await checkOrientation(page)
  const background = await checkTransparentBackground(page)
  const lines = await checkLinesOnlyNearTheirSlices(page)
  const warnings = await page.evaluate(() => ({
    shown: !document.getElementById('warnings').hidden,
    items: document.querySelectorAll('#warnings-list li').length,
    expected: window.pinhole.warningsShown,
  }))
  if (!(warnings.expected > 0 && warnings.shown && warnings.items === warnings.expected)) {
    fail(`the session's warnings are not shown: ${JSON.stringify(warnings)}`)
  }
  const position = await page.evaluate(() => document.getElementById('position').textContent)
  if (!/^LPS -?\d+\.\d, -?\d+\.\d, -?\d+\.\d mm/.test(position)) fail(`no crosshair position in LPS mm: ${position}`)
  await checkReset(page)
  const drr = await checkDrrSliders(page)

  await page.screenshot({ path: join(outDir, 'viewer.png'), timeout: 180_000 })
  const errors = await page.evaluate(() => window.pinhole.errors)
  consoleErrors.push(...errors)
  if (consoleErrors.length > 0) fail(`console errors:\n${consoleErrors.join('\n')}`)
  console.log(JSON.stringify({ ok: true, url, needle_moved_mm: moved, panel, source_events: sourceEvents, orientation, background, lines, warnings, drr }))
} finally {
  await browser.close()
  demo.kill('SIGINT')
  const code = await new Promise((resolve) => demo.on('exit', (c, s) => resolve(c ?? s)))
  if (code !== 0) {
    console.error(`demo did not end cleanly on Ctrl-C (exit ${code}):\n${log()}`)
    process.exitCode = 1
  }
}
