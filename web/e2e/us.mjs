// End-to-end test of the viewer's live ultrasound panel in real headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core). Run by crates/cli's
// integration tests (viewer.rs), which start `pinhole serve` (PINHOLE_URL) and send
// tracked ultrasound frames over OpenIGTLink once this script writes OUT_DIR/page-ready.
// Checks: the panel is hidden before any frame, appears, its picture changes at least
// twice while frames arrive, the reslice-only toggle works, and the browser console
// stays free of errors. Prints a JSON summary as its last line.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const url = process.env.PINHOLE_URL
const outDir = process.argv[2] || 'target/e2e-us'
mkdirSync(outDir, { recursive: true })

const consoleLog = []
function fail(message) {
  console.error(`browser console:\n${consoleLog.slice(-30).join('\n')}`)
  console.error(`e2e FAILED: ${message}`)
  process.exitCode = 1
  throw new Error(message)
}

async function waitFor(page, predicate, what, arg = null, timeoutMs = 120_000) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: timeoutMs, polling: 50 })
  } catch {
    fail(`timed out waiting for ${what}`)
  }
}

if (!url) fail('PINHOLE_URL is not set')
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
  // Several polls have been answered "no frame yet": the panel must still be hidden.
  await page.waitForTimeout(500)
  const hiddenBefore = await page.evaluate(() => document.getElementById('us').hidden)
  if (!hiddenBefore) fail('the ultrasound panel shows before any frame')
  writeFileSync(join(outDir, 'page-ready'), 'ready\n')

  await waitFor(page, () => !document.getElementById('us').hidden && window.pinhole.usSeqShown !== null, 'the ultrasound panel to appear')
  // The picture on screen changes with the frames: at least 3 distinct seqs (2 changes).
  const seen = []
  const srcs = new Set()
  for (let waited = 0; waited < 60_000 && seen.length < 3; waited += 50) {
    const now = await page.evaluate(() => ({ seq: document.getElementById('us-img').dataset.seq, src: document.getElementById('us-img').src }))
    if (now.seq && now.seq !== seen[seen.length - 1]) seen.push(now.seq)
    srcs.add(now.src)
    await page.waitForTimeout(50)
  }
  if (seen.length < 3) fail(`the ultrasound picture changed fewer than twice: seqs ${JSON.stringify(seen)}`)
  const increasing = seen.every((s, i) => i === 0 || Number(s) > Number(seen[i - 1]))
  if (!increasing) fail(`the ultrasound picture went back to an older frame: ${JSON.stringify(seen)}`)

  // Frames keep arriving: each new src leaves the <img> undecoded (0 × 0) for a moment,
  // so the picture is read when it is decoded, in one go with the panel's text.
  const blendedHandle = await page
    .waitForFunction(() => {
      const img = document.getElementById('us-img')
      if (!img.complete || img.naturalWidth === 0) return null
      return {
        seqText: document.getElementById('us-seq').textContent,
        info: document.getElementById('us-info').textContent,
        width: img.naturalWidth,
        height: img.naturalHeight,
        latest: window.pinhole.usLatest,
      }
    }, null, { timeout: 30_000, polling: 50 })
    .catch(() => fail('the ultrasound picture was never decoded'))
  const blended = await blendedHandle.jsonValue()
  if (!/^#\d+ · blended$/.test(blended.seqText)) fail(`the panel shows no seq: ${JSON.stringify(blended)}`)
  if (!/age \d+ ms$/.test(blended.info)) fail(`the panel shows no age: ${JSON.stringify(blended)}`)
  if (blended.width !== blended.latest.width_px || blended.height !== blended.latest.height_px) {
    fail(`the picture is not the frame's size: ${JSON.stringify(blended)}`)
  }

  await page.evaluate(() => document.querySelector('input[name=us-view][value=reslice]').click())
  await waitFor(page, () => document.getElementById('us-img').dataset.view === 'reslice', 'the reslice-only picture', null, 30_000)
  const resliceText = await page.evaluate(() => document.getElementById('us-seq').textContent)
  if (!/^#\d+ · reslice$/.test(resliceText)) fail(`the toggle did not switch the picture: ${resliceText}`)

  await page.locator('#us').screenshot({ path: join(outDir, 'us-panel.png'), timeout: 60_000 })
  const errors = await page.evaluate(() => window.pinhole.errors)
  consoleErrors.push(...errors)
  if (consoleErrors.length > 0) fail(`console errors:\n${consoleErrors.join('\n')}`)
  console.log(
    JSON.stringify({
      ok: true,
      url,
      hidden_before_frames: hiddenBefore,
      seqs_seen: seen.map(Number),
      image_sources: srcs.size,
      blended,
      reslice_text: resliceText,
      build_ms: blended.latest.build_ms,
    }),
  )
} finally {
  await browser.close()
}
