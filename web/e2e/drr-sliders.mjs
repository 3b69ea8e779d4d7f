// Ten C-arm slider moves (LAO 3°, 6°, … 30°), each waited for until its preview DRR is on
// screen, then the slider released (full quality). Shared by the end-to-end test
// (web/e2e/demo.mjs) and the benchmark (bench/viewer_drr.sh). Returns the round trips the
// page measured (slider input → new image decoded), in ms.
export async function moveSliderTenTimes(page, timeoutMs = 120_000) {
  const wait = (predicate, arg, what) =>
    page.waitForFunction(predicate, arg, { timeout: timeoutMs, polling: 20 }).catch(() => {
      throw new Error(`timed out waiting for ${what}`)
    })
  await wait(() => window.pinhole?.drrPose?.quality === 'full', null, 'the first full-quality DRR')
  const first = await page.evaluate(() => document.getElementById('drr').src)
  const before = await page.evaluate(() => window.pinhole.drrRoundTripsMs.length)
  for (let n = 1; n <= 10; n++) {
    const lao = 3 * n
    await page.evaluate((value) => {
      const slider = document.getElementById('lao')
      slider.value = String(value)
      slider.dispatchEvent(new Event('input'))
    }, lao)
    await wait(
      (value) => window.pinhole.drrPose?.lao_deg === value && window.pinhole.drrPose.quality === 'preview',
      lao,
      `a preview DRR at LAO ${lao}`,
    )
  }
  const moved = await page.evaluate(() => document.getElementById('drr').src)
  await page.evaluate(() => document.getElementById('lao').dispatchEvent(new Event('change')))
  await wait(
    () => window.pinhole.drrPose?.lao_deg === 30 && window.pinhole.drrPose.quality === 'full',
    null,
    'the full-quality DRR at LAO 30',
  )
  const times = await page.evaluate((n) => window.pinhole.drrRoundTripsMs.slice(n), before)
  const phases = await page.evaluate((n) => window.pinhole.drrPhasesMs.slice(n), before)
  const sorted = [...times].sort((a, b) => a - b)
  const medianOf = (key) => {
    const values = phases.map((p) => p[key]).sort((a, b) => a - b)
    return Math.round(values[Math.floor(values.length / 2)])
  }
  return {
    phases_median_ms: { queued: medianOf('queued'), server: medianOf('server'), body: medianOf('body'), decode: medianOf('decode') },
    png_bytes: medianOf('bytes'),
    imageChanged: moved !== first,
    previews: times.length,
    median_ms: Math.round(sorted[Math.floor(sorted.length / 2)]),
    min_ms: Math.round(sorted[0]),
    max_ms: Math.round(sorted[sorted.length - 1]),
  }
}
